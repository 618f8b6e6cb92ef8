"""Equivalence of two models, judged by onnxruntime with graph optimizations disabled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from etc import runtime
from etc.errors import BadModelError

VERIFY_SIZES: tuple[tuple[int, int], ...] = ((17, 23), (32, 32), (9, 40))


@dataclass
class VerifyReport:
    """Worst differences per output over all probes, and the verdict."""

    equivalent: bool
    atol: float
    rtol: float
    rows: list[dict] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "equivalent": self.equivalent,
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": self.rows,
            "probes": self.probes,
        }


def _check_interfaces(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    ia, ib = runtime.input_specs(a), runtime.input_specs(b)
    if [s.name for s in ia] != [s.name for s in ib]:
        raise BadModelError(
            f"the models take different inputs ({[s.name for s in ia]} vs {[s.name for s in ib]}); nothing to compare"
        )
    oa = [o.name for o in a.graph.output]
    ob = [o.name for o in b.graph.output]
    if len(oa) != len(ob):
        raise BadModelError(f"the models have different numbers of outputs ({len(oa)} vs {len(ob)})")


def image_feeds(model: onnx.ModelProto, folder: str | Path, limit: int = 8) -> list[dict[str, np.ndarray]]:
    """Feeds from the images in ``folder`` (RGB in [0, 1]), resized to the model's static H/W when fixed."""
    from PIL import Image

    specs = runtime.input_specs(model)
    if len(specs) != 1:
        raise BadModelError("--images needs a model with exactly one input")
    spec = specs[0]
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not paths:
        raise BadModelError(f"{folder}: no .png/.jpg/.bmp images found")
    feeds = []
    for path in paths[:limit]:
        img = Image.open(path).convert("RGB")
        if spec.shape[2] and spec.shape[3]:
            img = img.resize((spec.shape[3], spec.shape[2]), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        feeds.append({spec.name: arr.astype(spec.dtype)})
    return feeds


def _same_feed(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def _known_feed(known: Sequence[tuple[dict, dict]], feed: dict) -> dict | None:
    """The known feed object equal to ``feed`` (same names, shapes, dtypes and values), if any."""
    return next((seen for seen, _ in known if _same_feed(seen, feed)), None)


def _known_outputs(known: Sequence[tuple[dict, dict]], feed: dict) -> dict | None:
    """The outputs already computed for an input equal to ``feed``."""
    return next((outputs for seen, outputs in known if _same_feed(seen, feed)), None)


def verify(
    model_a: onnx.ModelProto,
    model_b: onnx.ModelProto,
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    sizes: Sequence[tuple[int, int]] = VERIFY_SIZES,
    seeds: int = 2,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    images: str | Path | None = None,
    sessions: tuple[object | None, object | None] = (None, None),
    known: tuple[Sequence[tuple[dict, dict]], Sequence[tuple[dict, dict]]] = ((), ()),
    truth: dict | None = None,
) -> VerifyReport:
    """Runs both models on seeded inputs (several sizes, odd ones included) and optional images.

    An output passes when it is within ``atol + rtol * max(range, 1)`` of the reference, or, failing that, when
    it is no further from the float64 result (onnx reference evaluator) than the tolerance plus twice the
    reference's own float32 error (``float64_arbiter`` in the row says this second opinion was needed).
    ``sessions`` may hand over onnxruntime sessions already built for the two models (None: build one), and
    ``known`` (feed, outputs) pairs already computed for them: a probe equal to a known feed is not run again,
    and ``truth`` the float64 outputs already computed for those feeds (keyed as etc.runtime.within_rounding keys).
    """
    _check_interfaces(model_a, model_b)
    feeds: list[dict] = []
    probes: list[str] = []
    for seed in range(seeds):
        for feed in runtime.input_sets(model_a, input_ranges, sizes=sizes, seed=100 * seed):
            feeds.append(feed)
            probes.append("random " + "x".join(str(d) for d in next(iter(feed.values())).shape))
    if images is not None:
        for feed in image_feeds(model_a, images):
            feeds.append(feed)
            probes.append("image " + "x".join(str(d) for d in next(iter(feed.values())).shape))
    sess_a = sessions[0] or runtime.session(model_a)
    sess_b = sessions[1] or runtime.session(model_b)
    names_b = [o.name for o in sess_b.get_outputs()]
    known_a, known_b = known
    worst: dict[str, runtime.Difference] = {}
    failed: set[str] = set()
    arbitrated: set[str] = set()
    truth = {} if truth is None else truth
    for probe in feeds:
        feed = (
            _known_feed(known_a, probe) or _known_feed(known_b, probe) or probe
        )  # its float64 truth is kept
        out_a = _known_outputs(known_a, feed) or runtime.run(sess_a, feed)
        out_b = _known_outputs(known_b, feed) or dict(zip(names_b, sess_b.run(names_b, feed)))
        for (name, ref), cand in zip(out_a.items(), out_b.values()):
            diff = runtime.compare(ref, cand, name)
            if not diff.within(atol, rtol):
                tolerance = atol + rtol * max(diff.ref_range, 1.0)
                if runtime.within_rounding(model_a, feed, ref, cand, name, tolerance, truth):
                    arbitrated.add(name)
                else:
                    failed.add(name)
            prev = worst.get(name)
            if (
                prev is None
                or diff.max_abs > prev.max_abs
                or (diff.max_abs == prev.max_abs and diff.psnr < prev.psnr)
            ):
                worst[name] = diff
    rows = [
        {
            "output": d.output,
            "max_abs": d.max_abs,
            "max_rel": d.max_rel,
            "psnr": d.psnr,
            "range": d.ref_range,
            "ok": d.output not in failed,
            "float64_arbiter": d.output in arbitrated,
        }
        for d in worst.values()
    ]
    return VerifyReport(all(r["ok"] for r in rows), atol, rtol, rows, probes)
