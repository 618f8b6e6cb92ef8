"""The built-in demo: a small x2 super-resolution net trained by this project, taken through the whole job.

The network (``DemoSR``) is written the way re-parameterizable SR nets are trained, so every part of the
compiler has work to do::

    x ──> ECB(3->C) ─ ReLU ─> [ECB(C->C) ─ ReLU] x M ─> ECB(C->3s²) ──> Add ─> PixelShuffle(s) ─> clamp(0, 1)
    └───────────────── repeat_interleave(x, s², dim=1)  (ABPN anchor) ──┘

    ECB = Conv3x3 + (Conv1x1 -> Conv3x3) + (Conv1x1 -> Sobel-x) + (Conv1x1 -> Sobel-y) + (Conv1x1 -> Laplacian)

``fold`` removes the per-channel scales of the edge branches, ``rep`` merges each ECB into one 3x3 conv, ``et``
turns the anchor into identity channels carried through the body, pushes the Add and the clamp through
DepthToSpace and writes the clamp as two Conv+ReLU; the result is Conv/ReLU/DepthToSpace only.

Weights: ``etc/data/demo_x2.npz`` (numpy arrays named like the state dict, plus a JSON ``__config__``), made
by ``examples/train_demo_model.py`` from scikit-image's bundled photos. :data:`EVAL_PHOTOS` are held out.

:func:`run_demo` runs the steps (export, optimize with per-pass checks, verify, quantize, evaluate, time) and
returns a :class:`DemoResult` whose :meth:`~DemoResult.table` is the summary. Image conventions (the same as
``etc.quant``): LR = PIL's antialiased bicubic downscale of the uint8 HR photo cropped to a multiple of s;
PSNR on the BT.601 Y channel with ``s`` border pixels cropped.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from etc.quant import evaluate, metrics
from etc.quant.calib import bicubic_downscale, crop_to_multiple, to_nchw, to_rgb

WEIGHTS = Path(__file__).parents[1] / "data" / "demo_x2.npz"
SCALE = 2
TRAIN_PHOTOS: tuple[str, ...] = ("astronaut", "camera", "coffee", "rocket", "motorcycle")
EVAL_PHOTOS: tuple[str, ...] = ("chelsea",)
LATENCY_SIZE = (180, 320)
HTP_SIZE = (64, 64)  # the HTP simulator is slow: cycles are counted at this size
PASSES = "fold,rep,et"

Progress = Callable[[str], None]


# ---------------------------------------------------------------- the model (torch is imported on use)


@functools.cache
def demo_model_class():
    """The ``DemoSR`` nn.Module class, defined on first use so that reading weights needs no torch."""
    return _define_model()


def _define_model():
    from torch import nn

    from etc.zoo.common import anchor
    from etc.zoo.ecbsr import ECB

    class DemoSR(nn.Module):
        """ECB blocks with ReLU, the ABPN anchor, PixelShuffle and a final clamp to [0, 1]."""

        def __init__(self, channels: int = 16, blocks: int = 2, scale: int = SCALE) -> None:
            super().__init__()
            self.channels, self.blocks, self.scale = channels, blocks, scale
            ecbs = [ECB(3, channels), *[ECB(channels, channels) for _ in range(blocks)]]
            for ecb in ecbs:
                ecb.act = nn.ReLU()
            self.body = nn.Sequential(*ecbs, ECB(channels, 3 * scale * scale, act=False))
            self.upsample = nn.PixelShuffle(scale)

        def forward(self, x):
            return self.upsample(self.body(x) + anchor(x, self.scale)).clamp(0.0, 1.0)

        def config(self) -> dict:
            return {"channels": self.channels, "blocks": self.blocks, "scale": self.scale}

    return DemoSR


def load_weights(path: str | os.PathLike = WEIGHTS) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, arrays) from a demo weights file; plain numpy, no torch, no pickle."""
    with np.load(path, allow_pickle=False) as data:
        config = json.loads(str(data["__config__"]))
        arrays = {k: data[k] for k in data.files if k != "__config__"}
    return config, arrays


def save_weights(model, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write a DemoSR's state dict as float32 numpy arrays plus its config (and ``extra`` facts) as JSON."""
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    config = {**model.config(), **(extra or {})}
    np.savez_compressed(path, __config__=np.array(json.dumps(config, sort_keys=True)), **arrays)


def build_model(path: str | os.PathLike = WEIGHTS):
    """The trained DemoSR (eval mode) from a weights file."""
    import torch

    config, arrays = load_weights(path)
    sizes = {k: config[k] for k in ("channels", "blocks", "scale")}
    model = demo_model_class()(**sizes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)
    return model.eval()


# ---------------------------------------------------------------- images


def load_photo(name: str) -> np.ndarray:
    """A photo bundled with scikit-image as uint8 RGB (H, W, 3); grey photos are repeated to RGB."""
    from skimage import data

    return to_rgb(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())


def make_pair(hr: np.ndarray, scale: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8: HR cropped to a multiple of ``scale``, LR by PIL's antialiased bicubic downscale."""
    hr = np.ascontiguousarray(crop_to_multiple(hr, scale))
    return bicubic_downscale(hr, scale), hr


def bicubic_upscale(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """uint8 RGB LR -> uint8 RGB upscaled ``scale`` times with PIL's bicubic (the baseline)."""
    return evaluate.bicubic_upscale(lr, scale)


def to_hwc_uint8(output: np.ndarray) -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded as BasicSR's tensor2img does."""
    return metrics.to_uint8(metrics.chw_to_hwc(output))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int = SCALE) -> float:
    """PSNR (dB) on the Y channel with ``crop`` border pixels removed (:func:`etc.quant.metrics.psnr_y`)."""
    return metrics.psnr_y(sr, hr, crop=crop)


# ---------------------------------------------------------------- the run


@dataclass
class GraphRow:
    """One line of the final table: a graph, how big it is, how fast and how good."""

    graph: str
    precision: str
    ops: int | None = None
    op_types: dict[str, int] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    htp_cycles: int | None = None  # Qualcomm HTP simulator, per-node floor at DemoResult.htp_size
    psnr: float | None = None
    note: str = ""


@dataclass
class DemoResult:
    """Everything the demo found; ``ok`` is False when the optimized graph is not equivalent."""

    out_dir: Path
    files: dict[str, str]
    rows: list[GraphRow]
    bicubic_psnr: float | None
    eval_photos: tuple[str, ...]
    latency_size: tuple[int, int]
    threads: int
    verified: bool
    verify_max_abs: float | None
    verify_probes: list[str]
    remaining: list[str]
    rule_hits: dict[str, int]
    int8: str
    seconds: dict[str, float]
    htp: str = "not measured"  # "ok", or why the HTP column is empty
    htp_size: tuple[int, int] = HTP_SIZE

    @property
    def ok(self) -> bool:
        return self.verified

    def row(self, graph: str) -> GraphRow | None:
        return next((r for r in self.rows if r.graph == graph), None)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["ok"] = self.ok
        for row in out["rows"]:
            if row["psnr"] is not None and self.bicubic_psnr is not None:
                row["psnr_vs_bicubic"] = row["psnr"] - self.bicubic_psnr
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DemoResult:
        """The inverse of :meth:`as_dict` (e.g. for ``etc demo --json`` output read back)."""
        names = {f.name for f in fields(GraphRow)}
        rows = [GraphRow(**{k: v for k, v in r.items() if k in names}) for r in data["rows"]]
        kept = {f.name: data[f.name] for f in fields(cls) if f.name not in ("out_dir", "rows")}
        kept["eval_photos"], kept["latency_size"] = tuple(kept["eval_photos"]), tuple(kept["latency_size"])
        kept["htp_size"] = tuple(kept["htp_size"])
        return cls(out_dir=Path(data["out_dir"]), rows=rows, **kept)

    def int8_speed(self) -> float | None:
        """Latency of the plain INT8 graph over the plain FP32 graph, or None when either was not timed."""
        fp32, int8 = _latency_of(self.rows, "plain"), _latency_of(self.rows, "plain INT8")
        return None if not fp32 or int8 is None else int8 / fp32

    def table(self) -> str:
        """The final summary: one table, then the facts it rests on."""
        from etc.info import human
        from etc.text import table

        h, w = self.latency_size
        header = [
            "graph",
            "precision",
            "ops",
            "params",
            f"MACs@{h}x{w}",
            "latency ms",
            f"HTP cycles@{self.htp_size[0]}x{self.htp_size[1]}",
            "PSNR-Y dB",
            "vs bicubic",
        ]
        rows = [["bicubic (PIL)", "-", "-", "-", "-", "-", "-", _num(self.bicubic_psnr), "-"]]
        for r in self.rows:
            delta = None if r.psnr is None or self.bicubic_psnr is None else r.psnr - self.bicubic_psnr
            rows.append(
                [
                    r.graph,
                    r.precision,
                    "-" if r.ops is None else r.ops,
                    "-" if r.params is None else human(r.params),
                    "-" if r.macs is None else human(r.macs),
                    _num(r.latency_ms, "{:.2f}"),
                    "-" if r.htp_cycles is None else f"{r.htp_cycles:.3g}",
                    _num(r.psnr),
                    "-" if delta is None else f"{delta:+.2f}",
                ]
            )
        lines = [table(rows, header), ""]
        for r in self.rows:
            kinds = ", ".join(f"{op} {n}" for op, n in r.op_types.items())
            lines.append(f"{r.graph}: {kinds or r.note}")
        photos = ", ".join(self.eval_photos)
        lines.append(
            f"PSNR on the Y channel, {SCALE}-pixel border cropped, held-out photo(s): {photos} (not trained on)."
        )
        lines.append(
            f"Latency: onnxruntime CPU, graph optimizations enabled, {self.threads} threads, median, 1x3x{h}x{w}."
        )
        if self.htp == "ok":
            lines.append(
                f"HTP cycles: Qualcomm HTP simulator (onnxruntime-qnn), 1x3x{self.htp_size[0]}x{self.htp_size[1]}, "
                "every node on HTP (no CPU fallback), sum of each node's fewest cycles over 3 runs."
            )
        else:
            lines.append(f"HTP cycles: {self.htp}.")
        if self.verify_max_abs is not None:
            verdict = "passed" if self.verified else "FAILED"
            lines.append(
                f"Verification {verdict}: max abs difference {self.verify_max_abs:.2e} over "
                f"{len(self.verify_probes)} inputs (onnxruntime, optimizations off)."
            )
        else:
            lines.append("Verification FAILED: the optimized graph was not produced.")
        if self.remaining:
            lines.append("Not plain yet: " + "; ".join(self.remaining))
        if self.int8 != "ok":
            lines.append(f"INT8: {self.int8}")
        ratio = self.int8_speed()
        if ratio is not None:
            verdict = "faster" if ratio < 1 else "NOT faster"
            lines.append(
                f"INT8 / FP32 plain latency: {ratio:.2f}x (INT8 {verdict}; no extra MACs by default)."
            )
        lines.append(f"Models written to {self.out_dir}")
        return "\n".join(lines)


def _latency_of(rows: list, graph: str) -> float | None:
    return next((r.latency_ms for r in rows if r.graph == graph), None)


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.n = total, progress, 0
        self.seconds: dict[str, float] = {}

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def skip(self, why: str) -> None:
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {why}")

    def run(self, key: str, title: str, fn: Callable, *args, **kwargs):
        self.n += 1
        self.say(f"[{self.n}/{self.total}] {title} ...")
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[key] = time.perf_counter() - start
            self.say(f"      {key} done in {self.seconds[key]:.1f} s")


def run_demo(
    out_dir: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike = WEIGHTS,
    latency_size: tuple[int, int] = LATENCY_SIZE,
    latency_runs: int = 5,
    threads: int = 2,
    calib_patches: int = 16,
    eval_photos: Sequence[str] = EVAL_PHOTOS,
    progress: Progress | None = None,
) -> DemoResult:
    """Export, optimize, verify, quantize, evaluate and time the demo net; see the module docstring."""
    import onnx

    from etc.frontends.onnx_io import save

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="etc-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(8, progress)
    steps.say(f"etc demo: output folder {out}")
    files: dict[str, str] = {}

    def write(key: str, model: onnx.ModelProto) -> None:
        path = out / f"demo_{key}.onnx"
        save(model, path)
        files[key] = str(path)

    net = steps.run("build", f"building DemoSR x{SCALE} from {Path(weights).name}", build_model, weights)
    train = steps.run("export", "exporting to ONNX (dynamo, dynamic H/W)", _export, net)
    write("train", train)
    steps.say(f"      {files['train']}: {len(train.graph.node)} nodes")

    plain, report, failure = steps.run(
        "optimize", f"optimizing ({PASSES}, channels aligned to 4)", _optimize, train, steps
    )
    verification = None
    if plain is not None:
        write("plain", plain)
        verification = steps.run("verify", "verifying plain vs training-time graph", _verify, train, plain)
    else:
        steps.skip(f"verification skipped: {failure}")
    worst = max((r["max_abs"] for r in verification.rows), default=None) if verification else None
    verified = verification is not None and verification.equivalent

    int8, int8_status = None, "unavailable (no plain graph)"
    if plain is not None:
        int8, int8_status = steps.run(
            "quantize", "quantizing to INT8 (calibration: bundled photos)", _quantize, plain, calib_patches
        )
        if int8 is not None:
            write("int8", int8)
        else:
            steps.say(f"      INT8: {int8_status}")
    else:
        steps.skip("quantization skipped: no plain graph")

    graphs = {"training-time": train, "plain": plain, "plain INT8": int8}
    models = {k: v for k, v in graphs.items() if v is not None}
    psnrs, bicubic = steps.run(
        "evaluate", f"evaluating on held-out {', '.join(eval_photos)}", _evaluate, models, eval_photos
    )
    latency = steps.run(
        "latency",
        f"timing at 1x3x{latency_size[0]}x{latency_size[1]}, {threads} threads",
        _latency,
        models,
        latency_size,
        latency_runs,
        threads,
    )
    htp_cycles, htp_status = steps.run(
        "htp", f"counting HTP cycles at 1x3x{HTP_SIZE[0]}x{HTP_SIZE[1]} (simulator)", _htp_cycles, models
    )
    rows = [_row(name, model, latency_size, latency, psnrs, int8_status) for name, model in graphs.items()]
    for row in rows:
        row.htp_cycles = htp_cycles.get(row.graph)
    return DemoResult(
        out_dir=out,
        files=files,
        rows=rows,
        bicubic_psnr=bicubic,
        eval_photos=tuple(eval_photos),
        latency_size=tuple(latency_size),
        threads=threads,
        verified=verified,
        verify_max_abs=worst,
        verify_probes=list(verification.probes) if verification else [],
        remaining=report.remaining if report is not None else [],
        rule_hits=dict(report.pipeline.hits) if report is not None else {},
        int8=int8_status,
        seconds=steps.seconds,
        htp=htp_status,
    )


def _htp_cycles(models: dict) -> tuple[dict[str, int], str]:
    """HTP cycles (per-node floor) of each model, and "ok" or why there are none."""
    from etc import htp

    if not htp.available():
        return {}, "not measured (the HTP backend is not installed: pip install etc-onnx[htp])"
    found: dict[str, int] = {}
    failed: list[str] = []
    for name, model in models.items():
        try:
            found[name] = htp.cycles(model, size=HTP_SIZE, runs=3).floor
        except Exception as exc:  # a refused op or a QNN error: the row says so, the demo goes on
            failed.append(f"{name}: {str(exc).splitlines()[0][:160]}")
    return found, "ok" if not failed else "not measured for " + "; ".join(failed)


def _export(net):
    from etc.frontends.torch import example_input, export

    return export(net, example_input(), dynamic_hw=True, exporter="dynamo")


def _optimize(train, steps: _Steps):
    """(plain, report, None), or (None, None, reason) when a per-pass numeric check failed."""
    import warnings

    from etc.api import optimize
    from etc.errors import EquivalenceError, LimitWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LimitWarning)  # kept in report.notes, said below
            plain, report = optimize(
                train,
                passes=PASSES,
                align_channels=4,
                check_each_pass=True,
                verify=False,
                progress=lambda name: steps.say(f"      pass {name}"),
            )
    except EquivalenceError as exc:
        return None, None, str(exc)
    for note in report.notes:
        steps.say(f"      note: {note}")
    return plain, report, None


def _verify(train, plain):
    from etc.api import verify

    return verify(train, plain, atol=1e-5, rtol=1e-5)


def _quantize(plain, calib_patches: int):
    """(int8 model, "ok"), or (None, "unavailable (reason)"): the demo goes on without INT8."""
    try:
        from etc.quant import quantize
    except ImportError as exc:
        return None, f"unavailable (etc.quant cannot be imported: {exc})"
    try:
        int8, _ = quantize(plain, calib="samples", scale=SCALE, num=calib_patches, target="native")
        return int8, "ok"
    except Exception as exc:  # the demo reports any quantizer failure and carries on
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        return None, f"unavailable ({type(exc).__name__}: {msg})"


def _evaluate(models: dict, photos: Sequence[str]) -> tuple[dict[str, float], float]:
    """Mean PSNR-Y per model and for bicubic over the held-out photos (sessions as deployed: optimizations on)."""
    from etc import runtime

    pairs = [make_pair(load_photo(name)) for name in photos]
    bicubic = statistics.fmean(psnr_y(bicubic_upscale(lr), hr) for lr, hr in pairs)
    psnrs = {}
    for name, model in models.items():
        sess = runtime.session(model, optimize=True)
        feed_name = sess.get_inputs()[0].name
        values = [psnr_y(to_hwc_uint8(sess.run(None, {feed_name: to_nchw(lr)})[0]), hr) for lr, hr in pairs]
        psnrs[name] = statistics.fmean(values)
    return psnrs, bicubic


def _latency(models: dict, size: tuple[int, int], runs: int, threads: int) -> dict[str, float]:
    """Median wall time (ms) of ``runs`` runs after one warm-up, per model."""
    from etc import runtime
    from etc.timing import median_ms

    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    times = {}
    for name, model in models.items():
        sess = runtime.session(model, optimize=True, threads=threads)
        feed = {sess.get_inputs()[0].name: x}
        times[name] = median_ms(lambda sess=sess, feed=feed: sess.run(None, feed), runs)
    return times


def _row(name, model, size, latency, psnrs, int8_status) -> GraphRow:
    precision = "INT8" if "INT8" in name else "FP32"
    if model is None:
        note = int8_status if precision == "INT8" else "not produced"
        return GraphRow(name, precision, note=note)
    from etc.info import model_info

    info = model_info(model, size)
    written = {**info.ops, **info.qdq}  # the graph as written: an INT8 row lists its Q/DQ nodes too
    return GraphRow(
        graph=name,
        precision=precision,
        ops=sum(written.values()),
        op_types=dict(sorted(written.items(), key=lambda kv: (-kv[1], kv[0]))),
        params=info.params,
        macs=info.macs,
        latency_ms=latency.get(name),
        psnr=psnrs.get(name),
    )
