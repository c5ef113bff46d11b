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
operators (add, sub, mul, div and sqrt are correctly rounded on every IEEE machine) and
reductions done in float64, whose different summation orders almost never change the float32
result after rounding back. Sessions must then run at the "basic" optimisation level, which
folds constants but fuses nothing back into per-architecture kernels. The cost is speed (measured
in benchmarks/results/arm/); the bundle records the level in its manifest and every loader in
this package applies it.

Exp and Sigmoid (Softmax's exponential, the swish activation) are approximations whose float32
kernels are per-architecture code as well: onnxruntime 1.32 happens to give the same bits on x86
and aarch64, but onnxruntime 1.22 (the version the Android app pins) differs from x86 on aarch64
for about 10 % (Exp) and 31 % (Sigmoid) of inputs. They are computed in float64 and rounded to
float32 instead: the float64 kernels differ by far less than float32's rounding step, so the
rounded results agree (on 500,000 test inputs: everywhere, with 1.22 and 1.32, on x86 and
aarch64).

The integer products are exact only for some kernels, though. With uint8 activations and int8
weights (the arm64 and avx512_vnni quantisation), x86 CPUs without VNNI (AVX2 only, or AVX-512
without VNNI) multiply with ``vpmaddubsw``, which adds two u8·s8 products into a *saturating*
int16: 2·255·127 = 64770 does not fit, so those CPUs compute other matrix products than ARM's
dot-product and x86's VNNI instructions (exact int32 sums). The rewrite therefore also stores the
weights of every MatMulInteger as uint8 with their zero point moved up by 128: (w + 128) − (z +
128) = w − z, so the integer product is mathematically the same, and lossless (no weight loses a
bit, the tokens are those that ARM and VNNI computed before). onnxruntime multiplies u8·u8 by
widening to int16 and adding pairs into int32 (x86) or with UDOT (ARM): exact on every
instruction set. onnxruntime's reduce_range (7-bit int8 weights, whose pairs cannot saturate)
would do too, but loses a bit of every weight (0.1 BLEU on the demo student). Both changes cost
a few per cent of CPU time on x86 (benchmarks/results/arm-app-runtime/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# manifest settings key -> onnxruntime GraphOptimizationLevel name
_REPLACED = ("Softmax", "LayerNormalization")
# elementwise approximations computed in float64 and rounded back (float32 inputs and outputs)
_IN_FLOAT64 = ("Exp", "Sigmoid")
# uint8 = int8 + 128: the offset that moves a signed weight and its zero point into uint8
_UINT8_OFFSET = 128


def make_portable(graph_path: str | Path) -> dict:
    """Rewrite one .onnx file in place (subgraphs included); returns counts of the replaced nodes."""
    import onnx

    model = onnx.load(str(graph_path))
    counts = {"Softmax": 0, "LayerNormalization": 0, "Exp": 0, "Sigmoid": 0}
    _rewrite(model.graph, counts, [0])
    counts["MatMulInteger"] = unsigned_weights(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(graph_path))
    return counts


def unsigned_weights(graph) -> int:
    """Store the int8 weights (and zero points) of every MatMulInteger as uint8, shifted by 128.

    Works on a GraphProto in place, subgraphs included (a weight of the main graph read in an If
    branch is converted where it is stored). Only MatMulInteger nodes whose activations come from
    DynamicQuantizeLinear (uint8) and whose weights are int8 initializers are changed; weights no
    node reads any more are removed. Returns the number of nodes changed. uint8 weights are left
    alone, so the rewrite is idempotent.
    """
    import onnx

    dynamic = set()      # outputs of DynamicQuantizeLinear: uint8 activations
    owners = {}          # initializer name -> (graph holding it, tensor)
    taken = set()        # every name in use, for the new initializers' names

    def collect(g):
        taken.update(value.name for value in g.input)
        for tensor in g.initializer:
            owners.setdefault(tensor.name, (g, tensor))
            taken.add(tensor.name)
        for node in g.node:
            taken.update(node.output)
            if node.op_type == "DynamicQuantizeLinear" and node.domain in ("", "ai.onnx"):
                dynamic.add(node.output[0])
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    collect(attr.g)

    collect(graph)
    converted: dict[str, str] = {}   # old initializer name -> uint8 name
    replaced: set[str] = set()
    changed = 0

    def shifted(name: str) -> str:
        if name not in converted:
            from onnx import numpy_helper

            owner, tensor = owners[name]
            values = numpy_helper.to_array(tensor).astype(np.int16) + _UINT8_OFFSET
            new_name = _free_name(name + "_u8", taken)
            new = numpy_helper.from_array(values.astype(np.uint8), new_name)
            owner.initializer.append(new)
            owners[new_name] = (owner, new)
            taken.add(new_name)
            converted[name] = new_name
            replaced.add(name)
        return converted[name]

    def is_int8_initializer(name: str) -> bool:
        return name in owners and owners[name][1].data_type == onnx.TensorProto.INT8

    def visit(g):
        nonlocal changed
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
            if node.op_type != "MatMulInteger" or node.domain not in ("", "ai.onnx"):
                continue
            inputs = list(node.input) + [""] * (4 - len(node.input))
            a, b, a_zero, b_zero = inputs[:4]
            if a not in dynamic or not is_int8_initializer(b):
                continue
            if b_zero and not is_int8_initializer(b_zero):
                continue   # a zero point computed at run time: not a layout this rewrite knows
            inputs[1] = shifted(b)
            if b_zero:
                inputs[3] = shifted(b_zero)
            else:   # absent means 0, which becomes 128
                owner = owners[b][0]
                inputs[3] = _free_name(b + "_u8_zero_point", taken)
                taken.add(inputs[3])
                from onnx import numpy_helper

                zero = numpy_helper.from_array(np.array(_UINT8_OFFSET, dtype=np.uint8), inputs[3])
                owner.initializer.append(zero)
                owners[inputs[3]] = (owner, zero)
            del node.input[:]
            node.input.extend(inputs)
            changed += 1

    visit(graph)
    if replaced:
        still_read = _names_read(graph)
        for name in replaced - still_read:
            owner, tensor = owners[name]
            owner.initializer.remove(tensor)
    return changed


def _free_name(name: str, taken) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    return candidate


def _names_read(graph) -> set:
    """Every name a node reads or a graph returns, subgraphs included."""
    import onnx

    read = {value.name for value in graph.output} | {value.name for value in graph.input}
    for node in graph.node:
        read.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                read |= _names_read(attr.g)
    return read


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
    # inputs already widened to float64 (by a Cast this rewrite made): those nodes are done
    widened = {n.output[0] for n in graph.node if n.op_type == "Cast" and _attr(n, "to", None) == onnx.TensorProto.DOUBLE}
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rewrite(attr.g, counts, serial)
        standard = node.domain in ("", "ai.onnx")
        if node.op_type in _REPLACED and standard:
            serial[0] += 1
            prefix = f"{node.name or node.op_type}/portable{serial[0]}/"
            nodes += (_softmax if node.op_type == "Softmax" else _layer_norm)(node, prefix)
            counts[node.op_type] += 1
        elif node.op_type in _IN_FLOAT64 and standard and node.input[0] not in widened:
            serial[0] += 1
            prefix = f"{node.name or node.op_type}/portable{serial[0]}/"
            nodes += _in_float64(node.op_type, node.input[0], node.output[0], prefix)
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


def _in_float64(op, x, out, prefix):
    """float32 -> float64 ``op`` -> float32: the rounding hides the kernels' last-bit differences."""
    from onnx import TensorProto, helper

    return [helper.make_node("Cast", [x], [prefix + "in64"], to=TensorProto.DOUBLE),
            helper.make_node(op, [prefix + "in64"], [prefix + "out64"]),
            helper.make_node("Cast", [prefix + "out64"], [out], to=TensorProto.FLOAT)]


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
            *_in_float64("Exp", p + "shifted", p + "exp", p + "exp/"),
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
