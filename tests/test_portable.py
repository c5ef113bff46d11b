"""Portable numerics: the Softmax/LayerNorm rewrite, its manifest record, and every loader honouring it.

The property the rewrite exists for (x86 and aarch64 decode the same tokens) needs the aarch64
root under qemu and, for x86 CPUs without VNNI, qemu-x86_64's Haswell core; those checks run
here when `python -m ekd_edge.bench.arm ensure` (run by `make test`) has built them, fail when
they are missing and CI is set, and are skipped otherwise. benchmarks/arm_agreement.py measures
the same on the whole test split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import needs
from ekd_edge.bench.arm import AVX2_CPU, WHEELS, ArmRoot, X86Python
from ekd_edge.export.onnx_export import export_bundle, make_graphs_portable
from ekd_edge.export.portable import make_portable, unsigned_weights
from ekd_edge.runtime.session import optimization_level
from ekd_edge.errors import ProfileError
from ekd_edge.export.profiles import load_profile, parse_profile
from ekd_edge.host import cpu_flags

GRAPHS = ("encoder_model.onnx", "decoder_model_merged.onnx")


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def texts(lo_valid):
    return lo_valid.src[:12]


@pytest.fixture(scope="module")
def fp32_dir(nano_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("portable") / "fp32"
    export_bundle(nano_checkpoint, out, max_new_tokens=24)
    return out


@pytest.fixture(scope="module")
def portable_int8(nano_checkpoint, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("portable") / "int8"
    manifest = export_bundle(nano_checkpoint, out, quantize="int8", quant_arch="arm64", portable=True,
                             parity_texts=texts, max_new_tokens=24, mobile="arm")
    return out, manifest


def _op_types(path) -> list[str]:
    import onnx

    found = []

    def walk(graph):
        for node in graph.node:
            found.append(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(onnx.load(str(path)).graph)
    return found


def _weight_types(path) -> set:
    """Element types of the weights (initializers) that MatMulInteger nodes read, subgraphs included."""
    import onnx

    model = onnx.load(str(path))
    types = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer}
    found = set()

    def walk(graph):
        types.update({t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.initializer})
        for node in graph.node:
            if node.op_type == "MatMulInteger" and node.input[1] in types:
                found.add(types[node.input[1]])
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    return found


def _approximations_in_float64(path) -> bool:
    """Every Exp and Sigmoid (subgraphs included) reads a value widened to float64 by a Cast."""
    import onnx

    def walk(graph):
        widened = {n.output[0] for n in graph.node if n.op_type == "Cast"
                   and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)}
        ok = True
        for node in graph.node:
            if node.op_type in ("Exp", "Sigmoid"):
                ok = ok and node.input[0] in widened
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    ok = walk(attr.g) and ok
        return ok

    return walk(onnx.load(str(path)).graph)


def _require(ready: bool, what: str) -> None:
    needs(ready, f"{what} is not built (`python -m ekd_edge.bench.arm ensure`, which `make test` runs, builds it)")


def _encoder_out(path, ids, level="ORT_ENABLE_BASIC", threads=1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]


def test_rewrite_removes_the_fused_ops_and_keeps_the_numbers(fp32_dir, nano_checkpoint, tmp_path, texts):
    from ekd_edge.data.tokenizer import load_tokenizer

    portable = tmp_path / "portable"
    shutil.copytree(fp32_dir, portable)
    counts = make_graphs_portable(portable)
    # nano: 1 + 1 layers; the encoder has 1 Softmax, the merged decoder two branches of 2 each
    assert counts["encoder_model.onnx"]["Softmax"] >= 1 and counts["encoder_model.onnx"]["LayerNormalization"] >= 2
    assert counts["decoder_model_merged.onnx"]["Softmax"] >= 2
    assert counts["encoder_model.onnx"]["Sigmoid"] >= 1   # swish, in every feed-forward block
    for name in GRAPHS:
        ops = _op_types(portable / name)
        assert "Softmax" not in ops and "LayerNormalization" not in ops
        assert "ReduceSum" in ops and "Cast" in ops
        assert _approximations_in_float64(portable / name)
    ids = np.asarray([load_tokenizer(nano_checkpoint)(texts[0])["input_ids"]], dtype=np.int64)
    before = _encoder_out(fp32_dir / GRAPHS[0], ids, "ORT_ENABLE_ALL")
    after = _encoder_out(portable / GRAPHS[0], ids)
    assert before.shape == after.shape
    np.testing.assert_allclose(after, before, atol=2e-5, rtol=1e-5)
    # the rewrite is idempotent: a portable graph has nothing left to replace
    assert make_portable(portable / GRAPHS[0]) == {"Softmax": 0, "LayerNormalization": 0, "Exp": 0, "Sigmoid": 0,
                                                "MatMulInteger": 0}


def test_portable_int8_bundle_records_and_applies_its_session_level(portable_int8, texts):
    import onnxruntime as ort

    from ekd_edge.bench.ort_greedy import GreedyDecoder
    from ekd_edge.runtime.onnx_engine import OnnxTranslator

    out, manifest = portable_int8
    assert manifest["settings"]["numerics"] == "portable"
    assert manifest["settings"]["graph_optimization_level"] == "basic"
    assert optimization_level(manifest["settings"]) == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert optimization_level({}) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert set(manifest["portable"]) == set(GRAPHS)
    assert manifest["mobile"]["optimization_style"] == "Runtime"
    assert set(manifest["mobile"]["ort_files"]) == {"encoder_model.ort", "decoder_model_merged.ort"}
    for name in GRAPHS:
        assert "Softmax" not in _op_types(out / name) and "MatMulInteger" in _op_types(out / name)
        assert manifest["portable"][name]["MatMulInteger"] > 0
        assert _weight_types(out / name) == {"uint8"}, "int8 weights saturate AVX2's u8*s8 products"

    translator = OnnxTranslator(out)
    session = translator.model.encoder.session
    assert session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    decoder = GreedyDecoder(out, threads=1)
    assert decoder.optimization_level.endswith("ORT_ENABLE_BASIC")
    # both loaders decode the same tokens (generate vs the plain-onnxruntime loop), one sentence at
    # a time: int8 activation scales are per tensor, so a padded batch quantises differently
    for text in texts:
        expected = translator.generate_ids([text], max_new_tokens=24)[0]
        got = decoder.generate(translator.tokenizer(text)["input_ids"], max_new_tokens=24)
        assert got == [t for t in expected if t not in (0, 1)]


def test_portable_int8_is_bit_stable_across_threads_and_levels(portable_int8, nano_checkpoint, lo_valid):
    """With nothing fused, thread count and optimisation level cannot change a single bit."""
    from ekd_edge.data.tokenizer import load_tokenizer

    out, _ = portable_int8
    tokenizer = load_tokenizer(nano_checkpoint)
    for text in lo_valid.src[20:26]:
        ids = np.asarray([tokenizer(text)["input_ids"]], dtype=np.int64)
        reference = _encoder_out(out / GRAPHS[0], ids)
        assert np.array_equal(reference, _encoder_out(out / GRAPHS[0], ids, threads=2))
        assert np.array_equal(reference, _encoder_out(out / GRAPHS[0], ids, "ORT_DISABLE_ALL"))


def test_profiles_carry_the_portable_switch(tmp_path):
    assert load_profile("arm64").quantize.portable is True
    assert load_profile("android").quantize.portable is True
    assert load_profile("cpu-x86").quantize.portable is False
    with pytest.raises(ProfileError, match="quantize.portable applies to the ONNX formats"):
        parse_profile({"format": "ct2", "quantize": {"mode": "int8", "portable": True}}, "p.toml")
    with pytest.raises(ProfileError, match=r"portable: expected bool"):
        parse_profile({"quantize": {"portable": "yes"}}, "p.toml")


def test_aarch64_decodes_the_same_tokens(portable_int8, nano_checkpoint, lo_valid):
    from ekd_edge.bench.arm import agreement, greedy_ids
    from ekd_edge.data.tokenizer import load_tokenizer

    root = ArmRoot()
    _require(root.is_ready() and bool(shutil.which(root.qemu)),
             f"the aarch64 root with {' '.join(WHEELS)} ({root.path}, and qemu-aarch64-static)")
    out, _ = portable_int8
    tokenizer = load_tokenizer(nano_checkpoint)
    id_lists = [tokenizer(t)["input_ids"] for t in lo_valid.src[:8]]
    native = greedy_ids(None, Path(out), id_lists, max_new_tokens=24)
    emulated = greedy_ids(root, Path(out), id_lists, max_new_tokens=24, timeout=300)
    assert agreement(native["ids"], emulated["ids"])["rate"] == 1.0
    assert emulated["machine"] == "aarch64"


def test_float64_approximations_agree_on_aarch64(tmp_path):
    """Exp and Sigmoid as portable numerics computes them (float64, rounded to float32) give the
    same bits with the app's onnxruntime on aarch64 as here; the float32 kernels need not."""
    import onnx
    from onnx import TensorProto, helper

    root = ArmRoot()
    _require(root.is_ready() and bool(shutil.which(root.qemu)),
             f"the aarch64 root with {' '.join(WHEELS)} ({root.path}, and qemu-aarch64-static)")
    for op in ("Exp", "Sigmoid"):
        graph = helper.make_graph(
            [helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE), helper.make_node(op, ["x64"], ["y64"]),
             helper.make_node("Cast", ["y64"], ["y"], to=TensorProto.FLOAT)], op,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(tmp_path / f"{op}.onnx"))
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 3, 100_000), rng.uniform(-20, 0, 100_000)]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text("import sys, numpy as np, onnxruntime as ort\n"
                      "x = np.load(sys.argv[1])\n"
                      "for op in ('Exp', 'Sigmoid'):\n"
                      "    s = ort.InferenceSession(f'{sys.argv[2]}/{op}.onnx', providers=['CPUExecutionProvider'])\n"
                      "    np.save(f'{sys.argv[2]}/{op}_{sys.argv[3]}.npy', s.run(None, {'x': x})[0])\n")
    X86Python().run_python([str(script), str(tmp_path / "x.npy"), str(tmp_path), "x86"], timeout=300)
    root.run_python([str(script), str(tmp_path / "x.npy"), str(tmp_path), "aarch64"], timeout=600)
    for op in ("Exp", "Sigmoid"):
        here, there = np.load(tmp_path / f"{op}_x86.npy"), np.load(tmp_path / f"{op}_aarch64.npy")
        assert np.array_equal(here, there), f"{op}: {int((here != there).sum())} of {x.size} values differ"


# --------------------------------------------------------------------------------------------
# int8 products without saturation: uint8 weights


def _matmul_integer_model(path, weight, zero_point=None, in_if=False):
    """DynamicQuantizeLinear + MatMulInteger (int8 weight initializer, optional per-column zero
    point) + Cast, optionally inside an If branch that reads the weight from the main graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["xq", "w", "xz"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "wz"))
        inputs.append("wz")
    product = [helper.make_node("MatMulInteger", inputs, ["acc"]),
               helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])]
    if in_if:
        branch = helper.make_graph(product, "branch", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        nodes.append(helper.make_node("Constant", [], ["flag"], value=numpy_helper.from_array(np.array(True))))
        nodes.append(helper.make_node("If", ["flag"], ["out"], then_branch=branch, else_branch=branch))
    else:
        nodes += product
        nodes.append(helper.make_node("Identity", ["y"], ["out"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["m", n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _exact_products(tmp_path, x, weight, zero_point=None) -> np.ndarray:
    """What MatMulInteger should give, in int64 arithmetic: x quantised by onnxruntime's own
    DynamicQuantizeLinear, then (xq - xz) @ (w - wz). A host's int8 kernel may saturate instead."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])], "q",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", weight.shape[0]])],
                              [helper.make_tensor_value_info("xq", TensorProto.UINT8, None),
                               helper.make_tensor_value_info("xz", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "quantise.onnx"))
    import onnxruntime as ort

    xq, xz = ort.InferenceSession(str(tmp_path / "quantise.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    w = weight.astype(np.int64) - (0 if zero_point is None else zero_point.astype(np.int64))
    return ((xq.astype(np.int64) - int(xz)) @ w).astype(np.float32)


@pytest.mark.parametrize("layout", ["per_channel", "no_zero_point", "in_if_branch"])
def test_uint8_weights_give_the_same_integer_products(tmp_path, layout):
    import onnx

    rng = np.random.default_rng(3)
    weight = rng.integers(-127, 128, (64, 16)).astype(np.int8)
    zero_point = None if layout == "no_zero_point" else rng.integers(-3, 4, 16).astype(np.int8)
    path = _matmul_integer_model(tmp_path / "m.onnx", weight, zero_point, in_if=layout == "in_if_branch")
    x = rng.normal(size=(5, 64)).astype(np.float32)
    model = onnx.load(str(path))
    assert unsigned_weights(model.graph) == (2 if layout == "in_if_branch" else 1)   # then + else
    onnx.checker.check_model(model)
    assert [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8] == []
    onnx.save(model, str(tmp_path / "u8.onnx"))
    after = _run(tmp_path / "u8.onnx", x)
    # (w + 128) - (z + 128) = w - z: the exact integers, on every CPU (the int8 weights themselves
    # give them only where the kernel does not saturate: VNNI, not AVX2)
    assert np.array_equal(after, _exact_products(tmp_path, x, weight, zero_point))
    assert _weight_types(tmp_path / "u8.onnx") == {"uint8"}
    assert unsigned_weights(model.graph) == 0   # idempotent


def test_avx2_x86_saturates_int8_weights_but_not_uint8_ones(tmp_path):
    """The emulated AVX2 core really runs the saturating u8*s8 kernel (so the token checks that
    use it can fail), and the uint8 weights of portable exports compute the exact products there."""
    import onnx

    runner = X86Python(cpu=AVX2_CPU)
    _require(runner.is_ready(), "qemu-x86_64-static (apt-get install qemu-user-static)")
    rng = np.random.default_rng(5)
    weight = rng.choice(np.array([-127, 127], dtype=np.int8), size=(64, 16))
    path = _matmul_integer_model(tmp_path / "s8.onnx", weight, np.zeros(16, dtype=np.int8))
    model = onnx.load(str(path))
    unsigned_weights(model.graph)
    onnx.save(model, str(tmp_path / "u8.onnx"))
    # one row of large activations (they quantise to 255 and 254) in a batch whose minimum is 0
    x = np.zeros((2, 64), dtype=np.float32)
    x[1] = 1.0
    np.save(tmp_path / "x.npy", x)
    exact = (np.round(x / (1.0 / 255)).astype(np.int64) @ weight.astype(np.int64)).astype(np.float32)
    assert np.array_equal(_run(tmp_path / "u8.onnx", x), exact)   # this host, whatever its kernel
    if cpu_flags()["avx512_vnni"]:   # this host's int8-weight kernel sums exactly; an AVX2 one saturates
        assert np.array_equal(_run(path, x), exact)
    script = tmp_path / "run.py"
    script.write_text("import sys, numpy as np, onnxruntime as ort\n"
                      "x = np.load(sys.argv[2])\n"
                      "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
                      "np.save(sys.argv[3], s.run(None, {'x': x})[0])\n")
    for name in ("s8", "u8"):
        runner.run_python([str(script), str(tmp_path / f"{name}.onnx"), str(tmp_path / "x.npy"),
                           str(tmp_path / f"{name}_avx2.npy")], timeout=300)
    assert not np.array_equal(np.load(tmp_path / "s8_avx2.npy"), exact), "no saturation: not an AVX2 kernel?"
    assert np.array_equal(np.load(tmp_path / "u8_avx2.npy"), exact)


@pytest.mark.slow
def test_avx2_x86_decodes_the_same_tokens(portable_int8, nano_checkpoint, lo_valid):
    from ekd_edge.bench.arm import agreement, greedy_ids
    from ekd_edge.data.tokenizer import load_tokenizer

    runner = X86Python(cpu=AVX2_CPU)
    _require(runner.is_ready(), "qemu-x86_64-static (apt-get install qemu-user-static)")
    out, _ = portable_int8
    tokenizer = load_tokenizer(nano_checkpoint)
    id_lists = [tokenizer(t)["input_ids"] for t in lo_valid.src[:8]]
    native = greedy_ids(None, Path(out), id_lists, max_new_tokens=24)
    emulated = greedy_ids(runner, Path(out), id_lists, max_new_tokens=24, timeout=300)
    assert agreement(native["ids"], emulated["ids"])["rate"] == 1.0
