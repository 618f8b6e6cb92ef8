"""Idioms are units: activation and normalization chains as the exporters emit them are recognized (etc.idioms)
and no fold splits them (the rules driver declines the match, with the idiom in the reason), so onnxruntime still
fuses the erf GELU into one Gelu after ``fold``; the result stays equivalent."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from etc.fusion import optimized_graph  # noqa: E402
from etc.graph import to_gs  # noqa: E402
from etc.idioms import idiom_of  # noqa: E402
from etc.pipeline import PassContext  # noqa: E402
from etc.testing import apply_pass, assert_equivalent, ops  # noqa: E402
from tests.fold_helpers import graph  # noqa: E402
from tests.test_rep_zoo import cached_export  # noqa: E402


class ChannelsFirstLayerNorm(nn.Module):
    """ConvNeXt's LayerNorm over channels of an NCHW tensor, written out as ConvNeXt writes it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))
        self.bias = nn.Parameter(torch.linspace(-0.2, 0.3, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.5 * x)


ACTIVATIONS = {
    "gelu_erf": (lambda: nn.GELU(), "GELU (erf)"),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), "GELU (tanh)"),
    "silu": (lambda: nn.SiLU(), "SiLU/Swish"),
    "swish_beta": (lambda: Swish(), "SiLU/Swish"),
    "mish": (lambda: nn.Mish(), "Mish"),
    "layernorm": (lambda: ChannelsFirstLayerNorm(8), "LayerNorm"),
    "groupnorm": (lambda: nn.GroupNorm(2, 8), "GroupNorm"),
}
SPLIT_BY_FOLD = {
    "gelu_erf",
    "gelu_tanh",
    "layernorm",
    "groupnorm",
}  # a constant at the idiom's end meets a Conv


class Sandwich(nn.Module):
    """Conv -> idiom -> unpadded 1x1 Conv: every constant at the idiom's border could fold into a conv."""

    def __init__(self, idiom: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.idiom = idiom
        self.last = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.idiom(self.first(x)))


@pytest.fixture(scope="module")
def sandwiches() -> dict:
    return {}


def sandwich(request, cache: dict, name: str):
    if name not in cache:
        kind = type(f"Sandwich_{name}", (Sandwich,), {})  # its own export cache key
        cache[name] = cached_export(request, kind(ACTIVATIONS[name][0]()), "legacy")
    return cache[name]


def _folded(model):
    ctx = PassContext()
    return apply_pass(model, "fold", ctx=ctx).model, ctx.declines


def _kinds(model) -> set[str]:
    graph = to_gs(model)
    return {found.kind for node in graph.nodes if (found := idiom_of(node)) is not None}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_exported_idiom_is_recognized(request, sandwiches, name):
    assert _kinds(sandwich(request, sandwiches, name)) == {ACTIVATIONS[name][1]}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_fold_keeps_the_idiom_whole(request, sandwiches, name):
    model = sandwich(request, sandwiches, name)
    folded, declines = _folded(model)
    assert _kinds(folded) == {ACTIVATIONS[name][1]}
    before = [op for op in ops(model) if op not in ("Conv", "Shape")]
    after = [op for op in ops(folded) if op not in ("Conv", "Shape")]
    assert sorted(after) == sorted(before)  # every node of the idiom is still there
    split = [d.reason for d in declines if "would split" in d.reason]
    if name in SPLIT_BY_FOLD:
        assert any(ACTIVATIONS[name][1] in reason for reason in split), split
    assert_equivalent(model, folded, sizes=((17, 23), (5, 7)))


def test_fold_leaves_the_erf_gelu_to_onnxruntime(request, sandwiches):
    """The measured failure: GELU's * 0.5 folded into the next conv left onnxruntime no Gelu to fuse."""
    model = sandwich(request, sandwiches, "gelu_erf")
    folded, _ = _folded(model)
    assert optimized_graph(model).gelu == 1
    assert optimized_graph(folded).gelu == 1


def _hard_sigmoid_model(rng, gate: bool):
    body = "s = Add(c, three)\nk = Clip(s, zero, six)\n"
    body += "g = Mul(c, k)\nh = Div(g, six)\n" if gate else "h = Div(k, six)\n"
    body += "output = Conv(h, w2, b2)"
    return graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n" + body,
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        w2=rng.normal(size=(4, 4, 1, 1)).astype(np.float32),
        b2=rng.normal(size=4).astype(np.float32),
        three=np.array(3.0, np.float32),
        zero=np.array(0.0, np.float32),
        six=np.array(6.0, np.float32),
    )


@pytest.mark.parametrize("gate, kind", [(True, "HardSwish"), (False, "HardSigmoid")])
def test_decomposed_hard_activations_are_kept_whole(rng, gate, kind):
    """HardSwish/HardSigmoid written out (Add 3, Clip 0..6, / 6): neither the + 3 into the conv before nor the
    / 6 into the conv after."""
    model = _hard_sigmoid_model(rng, gate)
    folded, declines = _folded(model)
    assert _kinds(folded) == {kind}
    assert ops(folded) == ops(model)
    assert any(f"would split a {kind} idiom" in d.reason for d in declines)
    assert_equivalent(model, folded)


def test_a_squeeze_excite_gate_is_no_idiom(rng):
    """x * sigmoid(conv(x)) gates by another tensor: the rules treat it as usual."""
    model = graph(
        "c = Conv(input, w, b)\ns = Sigmoid(c)\noutput = Mul(input, s)",
        outputs="float[1,3,H,W] output",
        w=rng.normal(size=(3, 3, 1, 1)).astype(np.float32),
        b=rng.normal(size=3).astype(np.float32),
    )
    assert _kinds(model) == set()


def test_a_per_channel_scale_after_an_activation_still_folds(rng):
    """Only GELU's * 0.5 / HardSwish's / 6 (one number) belong to the idiom: a layer scale after a SiLU folds."""
    model = graph(
        "c = Conv(input, w, b)\ns = Sigmoid(c)\ng = Mul(c, s)\nm = Mul(g, gamma)\noutput = Conv(m, w2, b2)",
        w=rng.normal(size=(4, 3, 1, 1)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        gamma=rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32),
        w2=rng.normal(size=(4, 4, 1, 1)).astype(np.float32),
        b2=rng.normal(size=4).astype(np.float32),
    )
    folded, _ = _folded(model)
    assert ops(folded) == ["Conv", "Sigmoid", "Mul", "Conv"]
    assert _kinds(folded) == {"SiLU/Swish"}
    assert_equivalent(model, folded)
