"""rep on real exports of re-parameterizable zoo nets: deploy conv counts, equivalence, pretrained ECBSR."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import hashlib  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import etc.frontends.torch  # noqa: E402
import etc.zoo.common  # noqa: E402
from etc import runtime, zoo  # noqa: E402
from etc.cli import cli  # noqa: E402
from etc.frontends.onnx_io import save  # noqa: E402
from etc.frontends.torch import export  # noqa: E402
from etc.pipeline import NumericCheck, run_pipeline  # noqa: E402
from etc.testing import assert_equivalent, op_types  # noqa: E402
from etc.zoo.acnet import ACNetSR  # noqa: E402
from etc.zoo.dbb import DBBSR  # noqa: E402
from etc.zoo.ecbsr import ECBSR, ECBSRTrain  # noqa: E402
from etc.zoo.repvgg import RepVGGSR  # noqa: E402
from etc.zoo.sesr import SESR  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]


def small(name: str) -> torch.nn.Module:
    """Small training-time nets (two body blocks, 8 channels, x2) with deterministic random weights."""
    if name == "ecbsr_train":
        return ECBSRTrain(2, 8, 2, seed=3)
    if name == "sesr":
        return SESR(2, 8, 2, expand=32, seed=3)
    return {"repvgg": RepVGGSR, "acnet": ACNetSR, "dbb": DBBSR}[name](2, 8, 2, seed=3)


def deploy_convs(net: torch.nn.Module) -> int:
    return net.M + 2 if isinstance(net, ECBSRTrain) else net.deploy_convs


def export_cache_dir(request) -> Path:
    """pytest's cache folder for exports, or the session's temporary folder when the cache plugin is off."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return cache.mkdir("rep_exports")
    return request.getfixturevalue("tmp_path_factory").getbasetemp() / "rep_exports"


def cached_export(request, net: torch.nn.Module, exporter: str, dynamic_hw: bool = True) -> onnx.ModelProto:
    """A real export, kept in pytest's cache keyed by the exporter, dynamic H/W, torch version, sources and
    weights.

    The dynamo exporter spends seconds per call even on tiny nets; re-exporting an unchanged net teaches
    nothing, so repeated runs reuse the file (delete .pytest_cache or run with --cache-clear to re-export).
    Without pytest's cache plugin (``-p no:cacheprovider``) the file lives in the session's temporary folder.
    """
    digest = hashlib.sha256(f"{exporter} {dynamic_hw} {torch.__version__} {type(net).__qualname__}".encode())
    for module in (inspect.getmodule(type(net)), etc.zoo.common, etc.frontends.torch):
        digest.update(inspect.getsource(module).encode())
    for key, value in net.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().numpy().tobytes())
    folder = export_cache_dir(request)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest.hexdigest()[:32]}.onnx"
    if path.exists():
        return onnx.load(path)
    model = export(net, exporter=exporter, dynamic_hw=dynamic_hw)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(model, partial)
    os.replace(partial, path)  # parallel workers never read a half-written file
    return model


@pytest.fixture(scope="module")
def exports() -> dict:
    return {}


def exported(request, cache: dict, name: str, exporter: str):
    key = (name, exporter)
    if key not in cache:
        net = small(name)
        cache[key] = (net, cached_export(request, net, exporter))
    return cache[key]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["repvgg", "acnet", "dbb", "sesr", "ecbsr_train"])
def test_fold_rep_reaches_the_deploy_architecture(request, exports, name, exporter):
    net, model = exported(request, exports, name, exporter)
    check = NumericCheck(atol=1e-5)
    result = run_pipeline(model, "fold,rep", instruments=[check])
    ops = op_types(result.model)
    assert ops.count("Conv") == deploy_convs(net), ops
    assert not {"BatchNormalization", "AveragePool", "Mul", "Sum"} & set(ops), ops
    assert result.hits.get("rep/merge_parallel", 0) >= net.M
    assert_equivalent(model, result.model)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["repvgg", "dbb"])
def test_rep_alone_folds_batchnorm_it_meets(request, exports, name, exporter):
    """Without fold, rep still reads Conv->BN, BN-only branches and AvgPool->BN itself."""
    net, model = exported(request, exports, name, exporter)
    result = run_pipeline(model, "rep")
    ops = op_types(result.model)
    assert ops.count("Conv") == deploy_convs(net), ops
    assert "BatchNormalization" not in ops
    assert_equivalent(model, result.model)


def test_repvgg_reparameterize_matches_the_torch_deploy_net():
    net = RepVGGSR(2, 8, 2, seed=1)
    x = torch.rand(1, 3, 11, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(net(x), net.reparameterize()(x), atol=1e-5)


@pytest.mark.parametrize(
    "stem, exporter",
    [
        ("ECBSR_M4C16_x4", "legacy"),
        ("ECBSR_M4C32_x4", "legacy"),
        pytest.param("ECBSR_M4C16_x4", "dynamo", marks=pytest.mark.slow),
        pytest.param("ECBSR_M4C32_x4", "dynamo", marks=pytest.mark.slow),
    ],
)
def test_pretrained_ecbsr_training_form_becomes_the_deploy_model(
    request, pretrained_root, photo, stem, exporter
):
    """ECB blocks split from the real deploy kernels: after fold,rep one Conv per block, outputs match."""
    deploy = zoo.build("ecbsr", scale=4, pretrained=stem)
    train = ECBSRTrain.from_deploy(deploy, seed=7)
    model = cached_export(request, train, exporter)
    assert op_types(model).count("Conv") == 9 * (deploy.M + 2)  # five branches, nine convs per ECB
    result = run_pipeline(model, "fold,rep")
    assert op_types(result.model).count("Conv") == deploy.M + 2
    x = np.concatenate([photo[:, :, :37, :29], np.random.default_rng(0).uniform(0, 1, (1, 3, 37, 29))])
    x = x.astype(np.float32)
    with torch.no_grad():
        want = deploy(torch.from_numpy(x)).numpy()
    name = model.graph.input[0].name
    got = np.concatenate(
        [next(iter(runtime.run(result.model, {name: x[i : i + 1]}).values())) for i in range(2)]
    )
    assert np.abs(got - want).max() <= 1e-5


def test_explain_names_the_rule_and_the_reason(tmp_path):
    """A 1x1 with bias before a zero-padded 3x3 is refused; --explain says where and why."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 3, 3, padding=1))
    src = tmp_path / "in.onnx"
    save(export(net, exporter="legacy"), src)
    runner = CliRunner()
    out = runner.invoke(
        cli, ["optimize", str(src), "-o", str(tmp_path / "out.onnx"), "--passes", "rep", "--explain"]
    )
    assert out.exit_code == 0, out.output
    assert "compose_sequential" in out.output and "1x1 with a bias" in out.output
    deploy = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1, padding=1), torch.nn.Conv2d(8, 3, 3))
    save(export(deploy, exporter="legacy"), src)
    out = runner.invoke(cli, ["optimize", str(src), "-o", str(tmp_path / "out.onnx"), "--passes", "rep"])
    assert out.exit_code == 0, out.output
    verdict = runner.invoke(cli, ["verify", str(src), str(tmp_path / "out.onnx")])
    assert verdict.exit_code == 0, verdict.output


def test_ecbsr_deploy_reference_is_one_conv_per_block():
    assert sum(isinstance(m, torch.nn.Conv2d) for m in ECBSR(2, 8, 2, seed=0).modules()) == 4
