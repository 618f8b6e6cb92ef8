"""Imports point one way: core -> passes / quant -> api level -> commands / cli, and no module imports itself
back through others.

Every module under etc/ is parsed with ``ast``; module-level and function-local imports both count. A module
may import its own layer or any layer below it, never one above, and ``etc.passes`` and ``etc.quant`` never
import each other. The core has three sub-layers of its own, then the test kit:
  base      errors, text, timing, the graph layer (graph), conv algebra (convmath), runtime, ONNX load/save
  analysis  what a model is and costs: shapes, cost, info, ranges, verification
  driver    rules and the pass pipeline
  testing   the builders and runners of tests, fuzz and bench
The lazy name table in ``etc/__init__.py`` resolves by string and is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ETC = Path(__file__).resolve().parents[1] / "etc"

BASE, ANALYSIS, DRIVER, TESTKIT = "core/base", "core/analysis", "core/driver", "core/testing"
PASSES, QUANT, API, CLI = "passes", "quant", "api", "cli"
RANK = {BASE: 0.0, ANALYSIS: 0.1, DRIVER: 0.2, TESTKIT: 0.3, PASSES: 1, QUANT: 1, API: 2, CLI: 3}

# Longest prefix wins; a prefix names a module or a package and everything inside it.
LAYERS: dict[str, str] = {
    "etc": BASE,  # the package facade: lazy, string-resolved names only
    "etc.errors": BASE,
    "etc.text": BASE,
    "etc.timing": BASE,
    "etc.graph": BASE,
    "etc.convmath": BASE,
    "etc.runtime": BASE,
    "etc.float64": BASE,
    "etc.frontends": BASE,
    "etc.frontends.onnx_io": BASE,
    "etc.proto": BASE,
    "etc.shapes": ANALYSIS,
    "etc.idioms": ANALYSIS,
    "etc.fusion": ANALYSIS,
    "etc.htp": ANALYSIS,
    "etc.cost": ANALYSIS,
    "etc.info": ANALYSIS,
    "etc.ranges": ANALYSIS,
    "etc.verification": ANALYSIS,
    "etc.rules": DRIVER,
    "etc.pipeline": DRIVER,
    "etc.testing": TESTKIT,
    "etc.passes": PASSES,
    "etc.quant": QUANT,
    "etc.api": API,
    "etc.target": API,
    "etc.zoo": API,
    "etc.frontends.torch": API,
    "etc.adapters": API,
    "etc.tools.report": API,
    "etc.tools": API,
    "etc.commands": CLI,
    "etc.cli": CLI,
}

# Accepted back edges, as (importer, imported): none. An entry must name a live edge (the test below fails on
# a stale one), so an exception is always a visible decision.
ALLOWED: set[tuple[str, str]] = set()


# Accepted imports of another module's private name, as (importer, imported module): none, kept the same way.
ALLOWED_PRIVATE: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ETC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ETC.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The etc modules that ``module`` imports anywhere in its body (``from etc import x`` -> ``etc.x``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {name for name in found if name == "etc" or name.startswith("etc.")}


def _edges() -> set[tuple[str, str]]:
    modules = _modules()
    known = set(modules)
    return {(src, dst) for src, path in modules.items() for dst in _imports(src, path, known)}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _allowed(src: str, dst: str) -> bool:
    return any(_within(src, a) and _within(dst, b) for a, b in ALLOWED)


def _against_layers(src: str, dst: str) -> bool:
    src_layer, dst_layer = _layer(src), _layer(dst)
    if src_layer is None or dst_layer is None:
        return False  # reported by test_every_module_has_a_layer
    return RANK[dst_layer] > RANK[src_layer] or {src_layer, dst_layer} == {PASSES, QUANT}


def _violations() -> list[tuple[str, str]]:
    """Every (importer, imported) pair against the layering, the allowed ones included."""
    return [(src, dst) for src, dst in sorted(_edges()) if _against_layers(src, dst)]


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if _layer(m) is None]
    assert not missing, f"add these modules to LAYERS in tests/test_layers.py: {missing}"


def test_no_import_runs_back_up_the_layers():
    bad = [f"{s} ({_layer(s)}) imports {d} ({_layer(d)})" for s, d in _violations() if not _allowed(s, d)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """One import cycle per strongly connected group of modules (a module importing itself is not one)."""
    import networkx as nx

    graph = nx.DiGraph((s, d) for s, d in edges if s != d and d != "etc")
    return [sorted(group) for group in nx.strongly_connected_components(graph) if len(group) > 1]


def test_no_import_cycle():
    cycles = _cycles(_edges())
    assert not cycles, "modules that import each other (directly or through others): " + repr(cycles)


def test_the_cycle_check_finds_a_cycle_through_a_third_module():
    edges = {
        ("etc.cost", "etc.info"),
        ("etc.info", "etc.shapes"),
        ("etc.shapes", "etc.cost"),
        ("etc.a", "etc"),
    }
    assert _cycles(edges) == [["etc.cost", "etc.info", "etc.shapes"]]


def test_passes_and_quant_do_not_import_each_other():
    edges = _edges()
    crossing = [(s, d) for s, d in edges if {_layer(s), _layer(d)} == {PASSES, QUANT}]
    assert not crossing, crossing


def _private_imports() -> set[tuple[str, str, str]]:
    """(importer, module, name) for every ``from etc.x import _name`` across modules."""
    modules = _modules()
    found = set()
    for src, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("etc"):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and f"{node.module}.{alias.name}" not in modules and node.module != src:
                        found.add((src, node.module, alias.name))
    return found


def test_no_module_imports_another_modules_private_names():
    bad = sorted(
        f"{src} imports {name} from {mod}"
        for src, mod, name in _private_imports()
        if (src, mod) not in ALLOWED_PRIVATE
    )
    assert not bad, "make these public where they live, or move them:\n" + "\n".join(bad)


def test_allowed_exceptions_are_still_live():
    violations = _violations()
    stale = [
        f"{src} no longer imports {dst} against the layers: remove it from ALLOWED"
        for src, dst in sorted(ALLOWED)
        if not any(_within(s, src) and _within(d, dst) for s, d in violations)
    ]
    private = {(src, mod) for src, mod, _ in _private_imports()}
    stale += [
        f"{src} no longer imports private names of {mod}: remove it from ALLOWED_PRIVATE"
        for src, mod in sorted(ALLOWED_PRIVATE)
        if (src, mod) not in private
    ]
    assert not stale, "\n".join(stale)


def test_the_scanner_sees_function_local_and_relative_imports(tmp_path):
    src = tmp_path / "etc" / "quant" / "probe.py"
    src.parent.mkdir(parents=True)
    src.write_text(
        "from . import qdq\nfrom ..pipeline import run_pipeline\n"
        "def f():\n    from etc import api\n    import etc.passes.fold\n"
    )
    known = {"etc.quant.qdq", "etc.pipeline", "etc.api", "etc.passes.fold"}
    assert _imports("etc.quant.probe", src, known) == known


@pytest.mark.parametrize(
    "src, dst, against",
    [
        ("etc.quant.quantizer", "etc.pipeline", False),
        ("etc.quant.quantizer", "etc.api", True),
        ("etc.quant.quantizer", "etc.passes.prelu", True),
        ("etc.passes.fold", "etc.quant.qdq", True),
        ("etc.frontends.onnx_io", "etc.frontends.torch", True),
        ("etc.frontends.torch", "etc.frontends.onnx_io", False),
        ("etc.tools.demo", "etc.commands.common", True),
        ("etc.commands.quantize", "etc.quant.quantizer", False),
        ("etc.api", "etc.tools.report", False),
    ],
)
def test_the_layer_map_orders_modules(src, dst, against):
    assert _against_layers(src, dst) == against
