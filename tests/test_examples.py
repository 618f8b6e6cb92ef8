"""Every example script runs in its own process (small size, legacy exporter) and reports a verified rewrite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["abpn", "ecbsr", "espcn", "etds", "fsrcnn", "plain"]
PLAIN_AFTER = {"abpn", "etds", "fsrcnn", "plain"}  # families whose seed graph must end Conv/Relu/DepthToSpace


def run_example(name: str, *args: str, pretrained: bool) -> str:
    env = dict(os.environ)
    if not pretrained:
        env["ETC_PRETRAINED"] = str(ROOT / "no-such-folder")
    cmd = [
        sys.executable,
        str(ROOT / "examples" / f"{name}.py"),
        "--exporter",
        "legacy",
        "--size",
        "9x11",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def after_ops(out: str) -> dict[str, int]:
    ops = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] == "->":
            ops[parts[0]] = int(parts[3])
    return ops


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_with_random_weights(name):
    out = run_example(name, "--scale", "2", pretrained=False)
    assert "random weights" in out
    assert "verified: True" in out
    ops = {op: n for op, n in after_ops(out).items() if n}
    assert ops.get("Conv", 0) >= 1
    if name in PLAIN_AFTER:
        assert set(ops) <= {"Conv", "Relu", "DepthToSpace"}, ops
        assert "not plain" not in out
    if name == "espcn":
        assert "not plain: Tanh" in out and "not plain: Sigmoid" in out


def test_example_uses_real_weights_when_present(pretrained_root):
    out = run_example("abpn", pretrained=True)
    assert "pretrained weights" in out and "verified: True" in out


def test_examples_are_short():
    for name in EXAMPLES:
        assert len((ROOT / "examples" / f"{name}.py").read_text().splitlines()) < 40
