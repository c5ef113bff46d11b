"""Portable numerics: int8 graphs that decode to the same tokens on x86 and on ARM.

Dynamic int8 quantisation re-quantises every activation at run time. The integer matrix products
are exact on every CPU, but the float32 operators between them are not: onnxruntime's Softmax and
LayerNormalization kernels (and the fused kernels its "extended" graph optimisations create) use
per-architecture vector code whose results differ in the last bit between AVX-512 and NEON. A
one-bit difference that lands on a rounding boundary of the next quantisation moves an activation
by a whole int8 step, which can flip a near-tied greedy choice: on the demo's student, x86 and
aarch64 then agree on only ~96.5 % of sentences, against 100 % for the same model in fp32
(benchmarks/results/arm/).

The rewrite below removes those sources: Softmax and LayerNormalization become elementwise
operators (add, sub, mul, div and sqrt are correctly rounded on every IEEE machine; onnxruntime's
Exp gave identical bits on both architectures in our traces) and reductions done in float64,
whose different summation orders almost never change the float32 result after rounding back. Sessions must then run at the "basic" optimisation level, which
folds constants but fuses nothing back into per-architecture kernels. The cost is speed (measured
in benchmarks/results/arm/); the bundle records the level in its manifest and every loader in
this package applies it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# manifest settings key -> onnxruntime GraphOptimizationLevel name
OPTIMIZATION_LEVELS = {"all": "ORT_ENABLE_ALL", "basic": "ORT_ENABLE_BASIC"}
PORTABLE_LEVEL = "basic"


def optimization_level(settings: dict | None):
    """The onnxruntime GraphOptimizationLevel a bundle's manifest settings ask for (default: all)."""
    import onnxruntime as ort

    name = (settings or {}).get("graph_optimization_level", "all")
    return getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS.get(name, "ORT_ENABLE_ALL"))


def make_portable(graph_path: str | Path) -> dict:
    """Rewrite one .onnx file in place (subgraphs included); returns counts of the replaced nodes."""
    import onnx

    model = onnx.load(str(graph_path))
    counts = {"Softmax": 0, "LayerNormalization": 0}
    _rewrite(model.graph, counts, [0])
    onnx.checker.check_model(model)
    onnx.save(model, str(graph_path))
    return counts


def strip_shape_annotations(graph_path: str | Path) -> int:
    """Drop value_info (intermediate shape annotations) from a graph and its subgraphs, in place.

    The quantiser annotates every intermediate tensor; onnxruntime infers shapes itself at load,
    so the annotations only add bytes (about 4 % of an int8 bundle of the demo's size).
    """
    import onnx

    model = onnx.load(str(graph_path))
    removed = _strip(model.graph)
    if removed:
        onnx.save(model, str(graph_path))
    return removed


def _strip(graph) -> int:
    import onnx

    removed = len(graph.value_info)
    del graph.value_info[:]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                removed += _strip(attr.g)
    return removed


def _rewrite(graph, counts: dict, serial: list) -> None:
    import onnx

    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rewrite(attr.g, counts, serial)
        if node.op_type in counts and node.domain in ("", "ai.onnx"):
            serial[0] += 1
            prefix = f"{node.name or node.op_type}/portable{serial[0]}/"
            nodes += (_softmax if node.op_type == "Softmax" else _layer_norm)(node, prefix)
            counts[node.op_type] += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _attr(node, name, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _constant(name, value, dtype):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))


def _reduce(op, x, axes, out, prefix):
    """float32 -> float64 reduction -> float32: the float64 sum makes summation order irrelevant."""
    from onnx import TensorProto, helper

    return [helper.make_node("Cast", [x], [prefix + "in64"], to=TensorProto.DOUBLE),
            helper.make_node(op, [prefix + "in64", axes], [prefix + "out64"], keepdims=1),
            helper.make_node("Cast", [prefix + "out64"], [out], to=TensorProto.FLOAT)]


def _softmax(node, p):
    from onnx import helper

    x, y = node.input[0], node.output[0]
    axes = p + "axes"
    return [_constant(axes, [_attr(node, "axis", -1)], np.int64),
            # the max shift only keeps exp in range; any float32 max is exact, whatever the order
            helper.make_node("ReduceMax", [x, axes], [p + "max"], keepdims=1),
            helper.make_node("Sub", [x, p + "max"], [p + "shifted"]),
            helper.make_node("Exp", [p + "shifted"], [p + "exp"]),
            *_reduce("ReduceSum", p + "exp", axes, p + "sum", p + "sum/"),
            helper.make_node("Div", [p + "exp", p + "sum"], [y])]


def _layer_norm(node, p):
    from onnx import helper

    axis = _attr(node, "axis", -1)
    if axis != -1:
        raise ValueError(f"{node.name}: LayerNormalization over axis {axis} is not supported (only the last)")
    if len(node.output) > 1 and any(node.output[1:]):
        raise ValueError(f"{node.name}: LayerNormalization with mean/inv-std outputs is not supported")
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    axes = p + "axes"
    out = [_constant(axes, [-1], np.int64),
           _constant(p + "eps", _attr(node, "epsilon", 1e-5), np.float32),
           *_reduce("ReduceMean", x, axes, p + "mean", p + "mean/"),
           helper.make_node("Sub", [x, p + "mean"], [p + "centred"]),
           helper.make_node("Mul", [p + "centred", p + "centred"], [p + "squared"]),
           *_reduce("ReduceMean", p + "squared", axes, p + "var", p + "var/"),
           helper.make_node("Add", [p + "var", p + "eps"], [p + "var_eps"]),
           helper.make_node("Sqrt", [p + "var_eps"], [p + "std"]),
           helper.make_node("Div", [p + "centred", p + "std"], [p + "normed"])]
    if bias is None:
        return out + [helper.make_node("Mul", [p + "normed", scale], [node.output[0]])]
    return out + [helper.make_node("Mul", [p + "normed", scale], [p + "scaled"]),
                  helper.make_node("Add", [p + "scaled", bias], [node.output[0]])]
