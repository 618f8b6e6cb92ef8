"""The docs the project ships agree with its code: family lists, README commands and file references."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("pass_module", ["etc.passes.fold", "etc.passes.rep", "etc.passes.et"])
def test_each_pass_docstring_names_every_family_it_runs(pass_module):
    module = importlib.import_module(pass_module)
    missing = [f for f in module.FAMILIES if f.rsplit(".", 1)[1] not in module.__doc__]
    assert not missing, f"{pass_module}'s docstring does not mention {missing}"


def _readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [
        shlex.split(line.split("#")[0]) for block in blocks for line in block.splitlines() if line.strip()
    ]


def test_readme_copy_commands_never_overwrite_a_tracked_file():
    """The contributing section's `cp SRC DST` starts a new family: DST must not exist already."""
    copies = _copy_targets()
    assert copies, "the README no longer shows how to start a rule family"
    for source, target in copies:
        assert (ROOT / source).exists(), f"README copies {source}, which does not exist"
        assert not (ROOT / target).exists(), f"README's `cp {source} {target}` overwrites an existing file"


def test_repository_paths_named_in_the_readme_exist():
    named = set(re.findall(r"`((?:etc|tests|bench|examples)/[\w/.-]+\.(?:py|md|toml))`", README))
    assert named, "expected the README to name some of the project's files"
    created_by_readme = {target for _, target in _copy_targets()}
    missing = sorted(p for p in named if not (ROOT / p).exists() and p not in created_by_readme)
    assert not missing, f"README names files that are not in the repository: {missing}"


def _copy_targets() -> list[tuple[str, str]]:
    pairs = []
    for words in _readme_commands():
        pairs += [
            (words[i + 1], words[i + 2]) for i, w in enumerate(words) if w == "cp" and i + 2 < len(words)
        ]
    return pairs


def test_the_package_cites_only_files_it_ships():
    """Docstrings point to files of this repository, not to documents that live elsewhere."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "etc").rglob("*.py")
        if re.search(r"\bGUIDE\.md\b", path.read_text())
    ]
    assert not offenders, f"these modules cite GUIDE.md, which the repository does not ship: {offenders}"
