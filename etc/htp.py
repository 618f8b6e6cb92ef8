"""Qualcomm HTP (the Hexagon NPU) through onnxruntime-qnn: sessions, placement and cycles.

onnxruntime-qnn ships QNN's HTP backend; on x86-64 Linux it runs the NPU's graph compiler and a cycle simulator.
This module owns it: the plug-in is registered once per process, models get static-shape copies (HTP needs
fixed input shapes), sessions disable the CPU fallback (a node HTP cannot run is an error, never a silent CPU
run), placement reports QNN's own reason for every refused node, and the profile reader turns QNN's CSV into
cycles per run and per node (medians over runs).

Install with ``pip install etc-onnx[htp]``; without it every function raises :class:`HtpUnavailableError`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from etc.errors import EtcError

INSTALL_HINT = "install etc-onnx[htp] (pip install 'etc-onnx[htp]', which brings onnxruntime-qnn)"
EP_NAME = "QNNExecutionProvider"
DEFAULT_SIZE = (32, 32)
# The first run after session creation pays one-time costs (its cycles are several times higher).
WARMUP_RUNS = 1

_LOCK = threading.Lock()
_REGISTERED: dict[str, object] = {}


class HtpUnavailableError(EtcError):
    """onnxruntime-qnn is not installed (or its HTP backend cannot load)."""


class HtpRefusedError(EtcError):
    """HTP cannot run the whole model with the CPU fallback disabled; ``placement`` names the refused nodes."""

    def __init__(self, message: str, placement: Placement | None = None):
        super().__init__(message)
        self.placement = placement


def _qnn():
    """The onnxruntime_qnn module, or HtpUnavailableError naming the extra to install."""
    try:
        import onnxruntime_qnn
    except ImportError as exc:
        raise HtpUnavailableError(f"the HTP device needs onnxruntime-qnn: {INSTALL_HINT}") from exc
    return onnxruntime_qnn


def require() -> None:
    """Raises HtpUnavailableError (naming the extra to install) when onnxruntime-qnn is missing: a command
    asked for HTP checks this before its work."""
    _qnn()


def available() -> bool:
    """True when onnxruntime-qnn imports (does not load the backend)."""
    try:
        _qnn()
    except HtpUnavailableError:
        return False
    return True


def _devices() -> list:
    """The QNN EP devices, registering the plug-in library once per process."""
    import onnxruntime as ort

    qnn = _qnn()
    with _LOCK:
        if "devices" not in _REGISTERED:
            try:
                ort.register_execution_provider_library(EP_NAME, qnn.get_library_path())
            except Exception as exc:
                if "already registered" not in str(exc):
                    raise HtpUnavailableError(
                        f"onnxruntime-qnn did not load ({exc}); {INSTALL_HINT}"
                    ) from exc
            devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
            if not devices:
                raise HtpUnavailableError(f"onnxruntime lists no {EP_NAME} device; {INSTALL_HINT}")
            _REGISTERED["devices"] = devices
        return list(_REGISTERED["devices"])


# ---------------------------------------------------------------- static shapes


def static_copy(model: onnx.ModelProto, size: tuple[int, int]) -> onnx.ModelProto:
    """A copy whose 4-D inputs are 1xCxHxW with ``size`` and whose output/value shapes are re-inferred."""
    from etc.runtime import pin_hw

    pinned = pin_hw(model, size)
    del pinned.graph.value_info[:]
    for value in pinned.graph.output:
        value.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(pinned, strict_mode=False, data_prop=True)


# ---------------------------------------------------------------- sessions


def _options(profile_path: str | None, verbose: bool):
    import onnxruntime as ort

    qnn = _qnn()
    provider = {"backend_path": qnn.get_qnn_htp_path()}
    if profile_path:
        provider |= {"profiling_level": "detailed", "profiling_file_path": profile_path}
    options = ort.SessionOptions()
    options.log_severity_level = 0 if verbose else 4
    options.add_provider_for_devices(_devices(), provider)
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return options


@contextlib.contextmanager
def _captured_stderr():
    """Collects what native code writes to file descriptor 2 (onnxruntime's log) into a list of one string."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def session(model: onnx.ModelProto, *, size: tuple[int, int] = DEFAULT_SIZE, profile_path: str | None = None):
    """An onnxruntime session whose every node runs on HTP (CPU fallback disabled), at static ``size``.

    Raises HtpRefusedError with the placement (each refused node and QNN's reason) when HTP cannot take it all.
    """
    import onnxruntime as ort

    payload = static_copy(model, size).SerializeToString()
    try:
        return ort.InferenceSession(payload, _options(profile_path, verbose=False))
    except HtpUnavailableError:
        raise
    except Exception as exc:
        found = placement(model, size=size)
        raise HtpRefusedError(f"HTP cannot run the model: {found.summary() or _status(exc)}", found) from exc


def _status(exc: Exception) -> str:
    text = str(exc).strip()
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, sess=None) -> dict[str, np.ndarray]:
    """The model's outputs computed on HTP (size taken from the feeds)."""
    if sess is None:
        shape = next(iter(feeds.values())).shape
        sess = session(model, size=(int(shape[2]), int(shape[3])))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


# ---------------------------------------------------------------- placement


@dataclass(frozen=True)
class NodePlacement:
    """One ONNX node: whether HTP takes it and, if not, QNN's reason."""

    node: str
    op: str
    on_htp: bool
    reason: str = ""


@dataclass
class Placement:
    """Where each node runs; ``error`` is the session's failure when no single node was refused."""

    nodes: list[NodePlacement] = field(default_factory=list)
    error: str = ""

    @property
    def refused(self) -> list[NodePlacement]:
        return [n for n in self.nodes if not n.on_htp]

    @property
    def all_on_htp(self) -> bool:
        return not self.refused and not self.error

    def summary(self) -> str:
        """One line per refused node ('name' (Op): reason), or the session error; '' when all run on HTP."""
        lines = [f"node '{n.node}' ({n.op}): {n.reason}" for n in self.refused]
        if self.error:
            lines.append(self.error)
        return "; ".join(lines)

    def as_dict(self) -> dict:
        return asdict(self)


_FAILED = re.compile(
    r"Validation FAILED for \d+ nodes in OrtNodeUnit \((?P<unit>[^)]*)\) :\s*(?P<body>.*?)(?=\n\S*\d{4}-\d\d-\d\d |\Z)",
    re.S,
)


def refusals_from_log(log: str) -> dict[str, str]:
    """{node name: QNN's reason} from onnxruntime's verbose log of a QNN session creation."""
    found: dict[str, str] = {}
    for match in _FAILED.finditer(log):
        body = match.group("body")
        names = re.findall(r"Node name: (\S+)", body)
        reason = re.search(r"REASON\s*:\s*(.+)", body)
        text = " ".join(reason.group(1).split()) if reason else f"QNN refused the {match.group('unit')} unit"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        for name in names:
            found.setdefault(name, text)
    return found


def placement(model: onnx.ModelProto, *, size: tuple[int, int] = DEFAULT_SIZE) -> Placement:
    """Which nodes HTP accepts, from one session creation with verbose logs (QNN states each refusal's reason).

    A node without a name cannot be matched to the log: the copy handed to QNN names every node.
    """
    import onnxruntime as ort

    named = static_copy(model, size)
    for i, node in enumerate(named.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    options = _options(None, verbose=True)
    error = ""
    with _captured_stderr() as log:
        try:
            ort.InferenceSession(named.SerializeToString(), options)
        except Exception as exc:
            error = _status(exc)
    refusals = refusals_from_log(log[0])
    nodes = [
        NodePlacement(n.name, n.op_type, n.name not in refusals, refusals.get(n.name, ""))
        for n in named.graph.node
    ]
    if refusals:
        error = ""  # explained node by node
    return Placement(nodes, error)


# ---------------------------------------------------------------- cycles


@dataclass
class Cycles:
    """HTP cycles of a model at one size: per measured run, and per QNN node (median over runs)."""

    size: tuple[int, int]
    runs: list[int]
    per_node: dict[str, int]  # QNN node name -> median cycles
    per_op: dict[str, int]  # ONNX op type (or QNN's own name for inserted ops) -> sum of per_node
    floor: int = (
        0  # sum over nodes of each node's fewest cycles over the runs (the least load-disturbed view)
    )

    @property
    def total(self) -> int:
        """Median over runs of the accelerator's execute cycles."""
        return int(np.median(self.runs))

    @property
    def spread(self) -> float:
        """(max - min) / median over the runs."""
        return (max(self.runs) - min(self.runs)) / max(self.total, 1)

    def as_dict(self) -> dict:
        return {
            "size": list(self.size),
            "total": self.total,
            "runs": self.runs,
            "floor": self.floor,
            "per_op": self.per_op,
        }


def read_profile(path: str) -> list[tuple[int, dict[str, int]]]:
    """[(execute cycles, {QNN node: cycles})] per run, from QNN's detailed profiling CSV."""
    runs: list[tuple[int, dict[str, int]]] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            unit, name, value = (
                row.get("Unit of Measurement"),
                row.get("Event Identifier", ""),
                row.get("Time"),
            )
            if unit != "CYCLES" or value is None:
                continue
            if name == "Accelerator (execute) time (cycles)":
                runs.append((int(value), {}))
            elif row.get("Message") == "NODE" and runs:
                node = name.removesuffix(" (cycles)")
                runs[-1][1][node] = runs[-1][1].get(node, 0) + int(value)
    return runs


def onnx_node_of(qnn_name: str) -> str:
    """The ONNX node a QNN node comes from: 'conv0_token_1:OpId_23' -> 'conv0'."""
    name = qnn_name.split(":OpId_")[0]
    return re.sub(r"_token_\d+$", "", name)


def _per_op(per_node: Mapping[str, int], model: onnx.ModelProto) -> dict[str, int]:
    ops = {n.name: n.op_type for n in model.graph.node if n.name}
    totals: dict[str, int] = {}
    for qnn_name, value in per_node.items():
        base = onnx_node_of(qnn_name)
        op = ops.get(base) or re.split(r"[ _:]", base)[0] or "other"
        totals[op] = totals.get(op, 0) + value
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def cycles(
    model: onnx.ModelProto, *, size: tuple[int, int] = DEFAULT_SIZE, runs: int = 3, seed: int = 0
) -> Cycles:
    """HTP execute cycles of ``model`` at ``size``: one warm-up run, then ``runs`` measured ones."""
    import gc

    from etc.runtime import input_specs, make_inputs

    named = onnx.ModelProto()
    named.CopyFrom(model)
    for i, node in enumerate(named.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    feeds = make_inputs(input_specs(static_copy(named, size)), size=size, seed=seed)
    with tempfile.TemporaryDirectory(prefix="etc-htp-") as tmp:
        path = os.path.join(tmp, "profile.csv")
        sess = session(named, size=size, profile_path=path)
        for _ in range(WARMUP_RUNS + runs):
            sess.run(None, feeds)
        del sess
        gc.collect()
        measured = read_profile(path)[-runs:]
    if len(measured) < runs:
        raise EtcError(f"QNN's profile holds {len(measured)} runs, expected {runs}")
    per_node = {
        name: int(np.median([nodes.get(name, 0) for _, nodes in measured])) for name in measured[-1][1]
    }
    floor = sum(min(nodes.get(name, 0) for _, nodes in measured) for name in per_node)
    return Cycles(size, [total for total, _ in measured], per_node, _per_op(per_node, named), floor)


def median_cycles(
    model: onnx.ModelProto, *, size: tuple[int, int] = DEFAULT_SIZE, runs: int = 3, sessions: int = 1
) -> int:
    """Median execute cycles over ``sessions`` fresh sessions of ``runs`` runs each."""
    totals: list[int] = []
    for _ in range(sessions):
        totals += cycles(model, size=size, runs=runs).runs
    return int(np.median(totals))


class Runner:
    """Runs one model on HTP at whatever size its inputs have (one session per size), and on onnxruntime CPU
    alongside: ``max_abs`` is the largest |HTP - CPU| seen so far."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.sessions: dict[tuple[int, int], object] = {}
        self.cpu = None
        self.max_abs = 0.0

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from etc import runtime

        shape = next(iter(feeds.values())).shape
        size = (int(shape[2]), int(shape[3]))
        if size not in self.sessions:
            self.sessions[size] = session(self.model, size=size)
        if self.cpu is None:
            self.cpu = runtime.session(self.model)
        outputs = run(self.model, feeds, sess=self.sessions[size])
        reference = runtime.run(self.cpu, feeds)
        for name, value in outputs.items():
            diff = np.abs(value.astype(np.float64) - reference[name].astype(np.float64))
            self.max_abs = max(self.max_abs, float(diff.max()) if diff.size else 0.0)
        return outputs


def max_abs_vs_cpu(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]
) -> tuple[float, dict[str, np.ndarray]]:
    """Largest |HTP - onnxruntime CPU| over the feeds and outputs; also the last HTP outputs."""
    runner = Runner(model)
    last: dict[str, np.ndarray] = {}
    for feed in feeds:
        last = runner(feed)
    return runner.max_abs, last
