"""fold on real exports of every zoo model: no exporter leftovers remain and outputs are unchanged."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from etc import zoo  # noqa: E402
from etc.frontends.torch import export  # noqa: E402
from etc.graph import op_histogram  # noqa: E402
from etc.pipeline import NumericCheck, run_pipeline  # noqa: E402

SMALL = {
    "plain": {"M": 2, "C": 8},
    "espcn": {},
    "fsrcnn": {},
    "abpn": {"M": 2, "C": 8, "clamp": True},
    "abpn_et": {"M": 2, "C": 8},
    "ecbsr": {"M": 2, "C": 8, "clamp": True},
    "ecbsr_train": {"M": 2, "C": 8},
    "ecbsr_et": {"M": 2, "C": 8},
    "etds": {"M": 2, "C": 8},
    "etds_dual": {"M": 2, "C": 8},
}
LEFTOVERS = {"Identity", "Constant", "Dropout"}


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_fold_leaves_no_exporter_leftovers(name, exporter):
    scale = 3 if name in ("abpn", "etds") else 2
    net = zoo.build(name, scale=scale, seed=1, **SMALL[name])
    dynamic = export(net, dynamic_hw=True, exporter=exporter)
    static = export(net, dynamic_hw=False, exporter=exporter)
    for model, is_static in ((dynamic, False), (static, True)):
        check = NumericCheck(atol=1e-5)
        result = run_pipeline(model, "fold", instruments=[check])
        ops = op_histogram(result.model)
        assert not LEFTOVERS & set(ops), ops
        if is_static:  # every shape is known: no shape arithmetic (int64 tensors computed by nodes) survives
            assert not _computed_int_tensors(result.model)
        assert max(check.worst.values(), default=0.0) <= 1e-5


def _computed_int_tensors(model) -> list[str]:
    """Names of integer tensors produced by nodes (shape arithmetic)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    return [out for node in model.graph.node for out in node.output if types.get(out) in ints]
