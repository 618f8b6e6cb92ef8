"""Rule files import only infrastructure: no etc/passes/<family>.py imports another rule family's file.

A rule file is a module of etc/passes that defines ``rules = RuleSet([...])`` at top level. What several families
share lives in modules whose name starts with an underscore (etc.passes._merge, _linear, _region) or in etc.graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import etc.passes

PASSES = Path(etc.passes.__file__).parent


def _defines_rules(tree: ast.Module) -> bool:
    return any(
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "rules" for t in stmt.targets)
        for stmt in tree.body
    )


def _imported_modules(tree: ast.Module) -> set[str]:
    """Every etc.passes module named by an import anywhere in the file (function-local ones included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["etc.passes", base] if base else ["etc.passes"])
            found.add(base)
            if base == "etc.passes":
                found.update(f"etc.passes.{alias.name}" for alias in node.names)
    return {name.removeprefix("etc.passes.") for name in found if name.startswith("etc.passes.")}


def test_no_rule_file_imports_another_rule_file():
    trees = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PASSES.glob("*.py"))}
    rule_files = {name for name, tree in trees.items() if _defines_rules(tree)}
    assert {"et_dual", "rep_parallel", "fold_bn"} <= rule_files  # the test sees the families
    offending = {
        name: sorted(_imported_modules(tree) & (rule_files - {name}))
        for name, tree in trees.items()
        if name in rule_files
    }
    assert {name: imports for name, imports in offending.items() if imports} == {}


def test_shared_modules_are_not_rule_families():
    for path in PASSES.glob("_*.py"):
        if path.name != "__init__.py":
            assert not _defines_rules(ast.parse(path.read_text())), f"{path.name} defines rules"
