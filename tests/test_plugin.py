"""Plug-ins: examples/plugin installed with pip (offline, into a temporary target) and run through the CLI.

The package registers its pass only through the ``etc.passes`` entry point, so these tests see it exactly as a
user would: ``etc passes`` lists it and ``etc optimize --passes relu_chain`` runs it, checked numerically like a
built-in pass. Nothing is installed into the running environment; the target folder is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from etc.testing import assert_equivalent, op_types, random_conv_weights

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """examples/plugin built and installed with pip into a fresh folder (the source is copied first so the
    build leaves nothing behind in the repository)."""
    root = tmp_path_factory.mktemp("plugin")
    source, site = root / "src", root / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"),
            *("--disable-pip-version-check", "--quiet", "--target", str(site), str(source)),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.fail(f"pip could not install examples/plugin: {out.stderr[-2000:]}")
    yield site
    shutil.rmtree(root, ignore_errors=True)


def etc_cli(*args: str, site: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "etc.cli", *args], capture_output=True, text=True, env=env)


def doubled_relu_model(path: Path) -> Path:
    """Conv -> Relu -> Relu -> Conv, the second Relu feeding both the last Conv and a second output."""
    rng = np.random.default_rng(0)
    w1, b1 = random_conv_weights(rng, 4, 3, 3, 3)
    w2, b2 = random_conv_weights(rng, 3, 4, 3, 3)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Relu", ["r1"], ["r2"], name="relu2"),
        helper.make_node("Relu", ["r2"], ["features"], name="relu3"),
        helper.make_node("Conv", ["r2", "w2", "b2"], ["output"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "relus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, "H", "W"]),
        ],
        [numpy_helper.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_installed_plugin_is_listed_by_etc_passes(plugin_site):
    out = etc_cli("passes", site=plugin_site)
    assert out.returncode == 0, out.stderr
    line = next(row for row in out.stdout.splitlines() if row.startswith("relu_chain"))
    assert "example plug-in" in line
    assert "relu_of_relu" in out.stdout


def test_installed_plugin_runs_through_optimize_passes(plugin_site, tmp_path):
    model_path = doubled_relu_model(tmp_path / "relus.onnx")
    out_path = tmp_path / "out.onnx"
    out = etc_cli(
        "optimize", str(model_path), "--passes", "relu_chain", "-o", str(out_path), "--json", site=plugin_site
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["rule_hits"] == {"relu_chain/relu_of_relu": 2}
    assert payload["verification"]["equivalent"]
    source, result = onnx.load(model_path), onnx.load(out_path)
    assert op_types(result) == ["Conv", "Relu", "Relu", "Conv"]
    assert [o.name for o in result.graph.output] == ["output", "features"]
    assert_equivalent(source, result)


def test_without_the_plugin_the_pass_name_is_unknown(tmp_path):
    model_path = doubled_relu_model(tmp_path / "relus.onnx")
    out = etc_cli("optimize", str(model_path), "--passes", "relu_chain")
    assert out.returncode == 2
    assert "unknown pass 'relu_chain'" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- the command surface plug-ins join

REPORTING = ("optimize", "verify", "info", "quantize", "eval", "demo")


def test_cli_flags_are_kebab_case_and_booleans_are_flags():
    from etc.cli import cli

    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                assert flag == flag.lower() and "_" not in flag, f"etc {name} {flag}: flags are kebab-case"
            if isinstance(param.type, click.types.BoolParamType):
                assert param.is_flag, (
                    f"etc {name} {param.opts[0]} takes a true/false value; booleans are on/off flags"
                )
        if name in REPORTING:
            flags = {f for p in command.params if isinstance(p, click.Option) for f in p.opts}
            assert "--json" in flags, f"etc {name} reports but has no --json"
