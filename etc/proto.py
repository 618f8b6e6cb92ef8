"""ModelProto helpers: the one place for code that reads and edits ``onnx.ModelProto`` directly.

The rewrite passes work on onnx-graphsurgeon graphs (:mod:`etc.graph`); the quantizer, the cost model and the
report read and edit the protos themselves. These are their readers, constants, attributes, initializer edits
and the Conv attributes they need.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from etc import graph


def readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """{tensor: nodes reading it}, each node once per tensor, in graph order."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                out.setdefault(name, []).append(node)
    return out


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def is_const_conv(node: onnx.NodeProto, consts: Container[str]) -> bool:
    """A Conv whose weight and bias (when present) are in ``consts``."""
    return (
        node.op_type == "Conv"
        and len(node.input) >= 2
        and node.input[1] in consts
        and (len(node.input) < 3 or not node.input[2] or node.input[2] in consts)
    )


@dataclass(frozen=True)
class ConvSite:
    """A tensor ``tensor`` made by the Conv ``producer`` (through ``activation``) and read by the Convs
    ``consumers``: where equalization rescales and channel splitting widens."""

    tensor: str
    producer: str
    activation: str | None
    consumers: tuple[str, ...]


def nodes_named(model: onnx.ModelProto, names: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes called ``names``, in that order (KeyError for a missing one)."""
    by_name = {n.name: n for n in model.graph.node}
    return [by_name[n] for n in names]


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replaces initializer ``name`` in place with ``value`` stored as float32."""
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    """``base``, or ``base`` followed by the first number that no initializer or node tensor uses."""
    taken = {i.name for i in model.graph.initializer} | {
        t for n in model.graph.node for t in [*n.input, *n.output]
    }
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}{k}"
    return name


def initializer_updater(model: onnx.ModelProto, suffix: str) -> Callable[[str, Callable], str]:
    """``update(name, fn) -> new name``: adds fn(value of initializer ``name``) to ``model`` as a fresh initializer
    (so weights shared with other nodes stay untouched); computed in float64, stored as float32."""
    inits = {i.name: i for i in model.graph.initializer}

    def update(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> str:
        value = numpy_helper.to_array(inits[name]).astype(np.float64)
        new_name = fresh_name(model, name + suffix)
        model.graph.initializer.append(numpy_helper.from_array(fn(value).astype(np.float32), new_name))
        return new_name

    return update


def drop_unused_initializers(model: onnx.ModelProto) -> set[str]:
    """Removes in place the initializers no node or graph output reads; returns the names still read."""
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return read


@dataclass(frozen=True)
class ConvAttrs:
    """A Conv node's attributes with the ONNX defaults filled in (2-D defaults for the absent ones)."""

    group: int = 1
    strides: tuple[int, ...] = (1, 1)
    dilations: tuple[int, ...] = (1, 1)
    pads: tuple[int, ...] = (0, 0, 0, 0)
    auto_pad: str = "NOTSET"  # NOTSET, SAME_UPPER, SAME_LOWER or VALID; an empty string reads as NOTSET


def conv_attrs(node: onnx.NodeProto) -> ConvAttrs:
    """The Conv attributes of ``node`` read from the protobuf (no graph or shapes needed)."""
    attrs = {a.name: a for a in node.attribute}
    defaults = ConvAttrs()
    return ConvAttrs(
        group=attrs["group"].i if "group" in attrs else defaults.group,
        strides=tuple(attrs["strides"].ints) if "strides" in attrs else defaults.strides,
        dilations=tuple(attrs["dilations"].ints) if "dilations" in attrs else defaults.dilations,
        pads=tuple(attrs["pads"].ints) if "pads" in attrs else defaults.pads,
        auto_pad=graph.auto_pad(node),
    )
