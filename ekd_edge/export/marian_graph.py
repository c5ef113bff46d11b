"""Marian's encoder and decoder written directly as ONNX graphs: the math, and little else.

optimum traces the PyTorch model, so its graphs carry everything the Python code computes on the
way: attention-mask construction, shape arithmetic for every reshape, position ids; most of a
traced decoder step's nodes are such bookkeeping, and at batch 1 onnxruntime's per-node cost
dominates the step. The graphs below are written from the weights instead, with
the same input and output names as optimum's (so export/onefile.py wraps either kind):

    encoder_model.onnx            input_ids, attention_mask -> last_hidden_state
    decoder_model.onnx            the first decoder step (one token, position 0): input_ids,
                                  encoder_attention_mask, encoder_hidden_states -> logits,
                                  present.<i>.{decoder,encoder}.{key,value}
    decoder_with_past_model.onnx  one more token: input_ids, encoder_attention_mask,
                                  past_key_values.<i>.{decoder,encoder}.{key,value} -> logits,
                                  present.<i>.decoder.{key,value}

What makes them small: query, key and value come from one matrix product (one int8 activation
quantisation instead of three), the 1/sqrt(head_dim) scale is folded into the query weights,
reshapes copy the batch and length dimensions (``0``) instead of computing them, the position
of a step is read from the length of the key cache, the caches are named where they are made
(no Identity copies), and the padding mask becomes an additive bias once per call. Fast graphs
go further with onnxruntime's contrib MultiHeadAttention kernel: one node per attention, taking
the padding mask as int32 and appending the step's key and value to the cache itself
(FUSED_OPS; benchmarks/engines.py measures it). Keys and values are cached as [batch, heads, length, head_dim], the layout
onnxruntime's BeamSearch expects. Marian is post-norm: residual add, then LayerNorm, after
each of self-attention, cross-attention and the feed-forward block; the embeddings are scaled
by sqrt(d_model) when ``scale_embedding`` and added to fixed sinusoidal positions; the output
projection is the (shared) embedding matrix plus ``final_logits_bias``.

With an *output vocabulary* (``output_ids``: the model ids a decoder may produce, e.g. every
piece of the training targets) the decoder speaks in positions of that list: its input ids are
indices into it and its logits have one column per kept id, so the output projection multiplies
only those rows. The caller maps the indices back to model ids (export/onefile.py does, after
the search).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ekd_edge.errors import CheckpointError

OPSET = 18
MS_DOMAIN = "com.microsoft"
_MASKED = -1e9  # added to the scores of padding positions: exp() of it is exactly 0
_ACTIVATIONS = ("swish", "silu", "relu", "gelu")
FUSED_OPS = ("MultiHeadAttention", "SkipLayerNormalization")  # onnxruntime contrib kernels fast graphs may use
DEFAULT_FUSED_OPS = ("MultiHeadAttention",)  # SkipLayerNormalization measured no faster (benchmarks/engines.py)
INT8_BLOCKS = (128, 64, 32, 16)  # inputs per int8 scale: the largest that divides d_model (block_size_for)


def block_size_for(d_model: int) -> int | None:
    """Inputs per int8 scale for a model of width ``d_model``; None when no block size divides it.

    Larger blocks mean fewer scales to apply per product; smaller ones follow the weights more
    closely. 128 is what benchmarks/engines.py measures where d_model allows it.
    """
    return next((block for block in INT8_BLOCKS if d_model % block == 0), None)


def int8_blocks(matrix, block: int):
    """Symmetric int8 of each row in blocks of ``block``: (uint8 [rows, blocks, block], scales [rows, blocks]).

    MatMulNBits' 8-bit layout: value = (q - 128) * scale, and the scale maps the block's
    largest-magnitude value to -128, so it is represented exactly (onnxruntime's quantiser's rule).
    """
    import numpy as np

    rows, cols = matrix.shape
    blocks = matrix.reshape(rows, cols // block, block).astype(np.float32)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    scales = np.where(extreme == 0, 1.0, -extreme / 128.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scales[..., None]), -128, 127) + 128
    return q.astype(np.uint8), scales


def write_marian_graphs(checkpoint_dir: str | Path, out_dir: str | Path, *, int8_embeddings: int | None = None,
                        portable: bool = False, output_ids: list[int] | None = None,
                        fused_ops: tuple[str, ...] = DEFAULT_FUSED_OPS) -> Path:
    """Write the three graphs (and config.json) of a Marian checkpoint into ``out_dir``.

    With ``int8_embeddings`` (a MatMulNBits accuracy level: 4 multiplies in int8, 0 in float32) the
    embedding tables are stored once as int8 blocks (see ``int8_blocks``): the output projection
    multiplies them with MatMulNBits and the embedding lookups dequantise the rows they gather,
    so a tied table is one int8 tensor instead of a float32 table plus an int8 copy. ``portable``
    graphs (export/portable.py) multiply keys with a Transpose and a plain MatMul: the contrib
    FusedMatMul decoded 4 of 1,086 test sentences differently on aarch64 (onnxruntime 1.22)
    than on x86, where the plain product agreed on all (benchmarks/results/arm-app-runtime/).
    ``output_ids`` restricts the decoder to an output vocabulary (see the module docstring).
    ``fused_ops`` (fast graphs only; see FUSED_OPS) are onnxruntime contrib kernels used in place
    of small nodes: MultiHeadAttention for each attention (head reshapes, the key product, the
    mask, softmax, the value product, the cache concatenation), SkipLayerNormalization for each
    residual add + LayerNorm.
    """
    import onnx
    import torch
    from transformers import MarianMTModel

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    config = json.loads((checkpoint_dir / "config.json").read_text())
    if config.get("model_type") != "marian":
        raise CheckpointError(f"{checkpoint_dir}/config.json: model_type is {config.get('model_type')!r}, "
                              "the lean graphs are written for marian only")
    if config.get("activation_function") not in _ACTIVATIONS:
        raise CheckpointError(f"{checkpoint_dir}/config.json: activation_function "
                              f"{config.get('activation_function')!r} is not one of {', '.join(_ACTIVATIONS)}")
    if config.get("normalize_before") or config.get("add_final_layer_norm"):
        raise CheckpointError(f"{checkpoint_dir}/config.json: pre-norm Marian variants are not supported")
    with torch.no_grad():
        model = MarianMTModel.from_pretrained(checkpoint_dir, local_files_only=True).eval()
        # the state dict holds the sinusoidal table and the tied output projection as they are used
        weights = {name: tensor.float().numpy() for name, tensor in model.state_dict().items()}
    dims = _Dims(config)
    if output_ids is not None:
        if len(set(output_ids)) != len(output_ids) or not all(0 <= i < dims.vocab for i in output_ids):
            raise CheckpointError(f"{checkpoint_dir}: the output vocabulary must be distinct ids below {dims.vocab}")
        dims.output_ids = list(output_ids)
    dims.int8_level = int8_embeddings if dims.block else None
    out_dir.mkdir(parents=True, exist_ok=True)
    dims.fused_attention = not portable
    unknown = sorted(set(fused_ops) - set(FUSED_OPS))
    if unknown:
        raise CheckpointError(f"unknown fused op(s) {', '.join(unknown)} (supported: {', '.join(FUSED_OPS)})")
    dims.attention_op = "MultiHeadAttention" in fused_ops and not portable
    dims.skip_norm = "SkipLayerNormalization" in fused_ops and not portable
    graphs = {"encoder_model.onnx": _encoder(weights, dims), "decoder_model.onnx": _decoder(weights, dims, first=True),
              "decoder_with_past_model.onnx": _decoder(weights, dims, first=False)}
    for name, graph in graphs.items():
        model_proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET),
                                                                   onnx.helper.make_opsetid(MS_DOMAIN, 1)],
                                             producer_name="ekd-edge")
        model_proto.ir_version = 10
        tmp = out_dir / f".{name}.tmp"
        onnx.save(model_proto, str(tmp))
        os.replace(tmp, out_dir / name)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


class _Dims:
    def __init__(self, config: dict):
        self.d_model = int(config["d_model"])
        self.heads = int(config["decoder_attention_heads"])
        self.encoder_heads = int(config["encoder_attention_heads"])
        self.encoder_layers = int(config["encoder_layers"])
        self.decoder_layers = int(config["decoder_layers"])
        self.vocab = int(config.get("decoder_vocab_size") or config["vocab_size"])
        self.embed_scale = math.sqrt(self.d_model) if config.get("scale_embedding") else 1.0
        self.activation = config["activation_function"]
        self.int8_level: int | None = None
        self.block = block_size_for(self.d_model)
        self.fused_attention = True
        self.attention_op = False
        self.skip_norm = False
        self.output_ids: list[int] | None = None
        for heads in (self.heads, self.encoder_heads):
            if self.d_model % heads:
                raise CheckpointError(f"d_model {self.d_model} is not a multiple of {heads} attention heads")

    @property
    def out_vocab(self) -> int:
        """Columns of the decoder's logits: the output vocabulary's size, or the whole vocabulary."""
        return self.vocab if self.output_ids is None else len(self.output_ids)


class _Graph:
    """Nodes and weights of one graph under construction; names are made unique by a counter."""

    def __init__(self, weights: dict, dims: "_Dims"):
        self.weights, self.nodes, self.initializers, self._names = weights, [], {}, 0
        self.fused_attention = dims.fused_attention
        self.attention_op, self.skip_norm = dims.attention_op, dims.skip_norm
        self.float_values: list[str] = []

    def op(self, op_type: str, inputs: list[str], n_outputs: int = 1, domain: str = "", **attrs):
        self._names += 1
        outputs = [f"{op_type.lower()}_{self._names}_{i}" for i in range(n_outputs)]
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{self._names}", domain=domain,
                                           **attrs))
        return outputs[0] if n_outputs == 1 else outputs

    def name(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        """A node whose output has a fixed (interface) name."""
        from onnx import helper

        self._names += 1
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{self._names}", **attrs))
        return output

    def multi_head_attention(self, q: str, k: str, v: str, heads: int, *, mask: str | None = None,
                             past: tuple[str, str] | None = None, present: tuple[str, str] | None = None):
        """com.microsoft.MultiHeadAttention: one kernel for the head split, q k^T, the padding mask
        (``mask``: int32 [batch, keys], 1 = attend), softmax, the product with v and the merge.

        q, k, v are [batch, length, d] (k and v may be [batch, heads, keys, head_dim] caches); q is
        pre-scaled (scale 1). With ``present`` the keys and values, appended to ``past`` where
        given, come out under those names as [batch, heads, keys, head_dim]: the step's cache."""
        from onnx import helper

        self._names += 1
        inputs = [q, k, v, "", mask or "", "", *(past or ())]
        while inputs[-1] == "":
            inputs.pop()
        outputs = [f"mha_{self._names}_0", *(present or ())]
        self.nodes.append(helper.make_node("MultiHeadAttention", inputs, outputs, name=f"MultiHeadAttention_{self._names}",
                                           domain=MS_DOMAIN, num_heads=heads, scale=1.0))
        self.float_values.extend(outputs)  # contrib op: ONNX shape inference cannot type its outputs
        return outputs[0] if present is None else outputs

    def const(self, name: str, array) -> str:
        import numpy as np
        from onnx import numpy_helper

        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def ints(self, *values: int) -> str:
        import numpy as np

        return self.const("i64_" + "_".join(str(v).replace("-", "m") for v in values), np.array(values, np.int64))

    def scalar(self, value: float) -> str:
        import numpy as np

        return self.const(f"f32_{value:g}".replace("-", "m").replace(".", "p"), np.array(value, np.float32))

    def linear(self, x: str, prefix: str, scale: float = 1.0) -> str:
        """x @ W^T + b of the torch Linear ``prefix`` (``scale`` folded into W and b)."""
        w = self.const(f"{prefix}.weight_t", (self.weights[f"{prefix}.weight"] * scale).T)
        b = self.const(f"{prefix}.bias", self.weights[f"{prefix}.bias"] * scale)
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def fused_linear(self, x: str, prefixes: list[str], scales: list[float]) -> list[str]:
        """Several Linears of the same input as one matrix product, split back into their outputs."""
        import numpy as np

        key = "+".join(prefixes)
        w = self.const(f"{key}.weight_t", np.concatenate(
            [(self.weights[f"{p}.weight"] * s).T for p, s in zip(prefixes, scales)], axis=1))
        b = self.const(f"{key}.bias", np.concatenate([self.weights[f"{p}.bias"] * s for p, s in zip(prefixes, scales)]))
        widths = [self.weights[f"{p}.bias"].shape[0] for p in prefixes]
        return self.op("Split", [self.op("Add", [self.op("MatMul", [x, w]), b]), self.ints(*widths)],
                       n_outputs=len(prefixes), axis=-1)

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op("LayerNormalization", [x, self.const(f"{prefix}.weight", self.weights[f"{prefix}.weight"]),
                                              self.const(f"{prefix}.bias", self.weights[f"{prefix}.bias"])],
                       axis=-1, epsilon=1e-5)

    def residual_norm(self, x: str, update: str, prefix: str) -> str:
        """LayerNorm(x + update): Marian's post-norm residual; one com.microsoft.SkipLayerNormalization
        kernel where the graph uses onnxruntime's fused kernels."""
        if not self.skip_norm:
            return self.layer_norm(self.op("Add", [x, update]), prefix)
        out = self.op("SkipLayerNormalization", [update, x, self.const(f"{prefix}.weight", self.weights[f"{prefix}.weight"]),
                                                 self.const(f"{prefix}.bias", self.weights[f"{prefix}.bias"])],
                      domain=MS_DOMAIN, epsilon=1e-5)
        self.float_values.append(out)
        return out

    def heads(self, x: str, heads: int, head_dim: int) -> str:
        """[batch, length, d] -> [batch, heads, length, head_dim]."""
        return self.op("Transpose", [self.op("Reshape", [x, self.ints(0, 0, heads, head_dim)])], perm=[0, 2, 1, 3])

    def merge_heads(self, x: str, d_model: int) -> str:
        return self.op("Reshape", [self.op("Transpose", [x], perm=[0, 2, 1, 3]), self.ints(0, 0, d_model)])

    def attend(self, q: str, k: str, v: str, bias: str | None) -> str:
        """softmax(q k^T + bias) v, q pre-scaled.

        Fast graphs read k^T inside com.microsoft.FusedMatMul (transB) instead of materialising it
        with a Transpose; portable graphs keep the plain Transpose + MatMul (see write_marian_graphs).
        """
        if self.fused_attention:
            scores = self.op("FusedMatMul", [q, k], domain=MS_DOMAIN, transB=1, alpha=1.0)
            self.float_values.append(scores)  # ONNX shape inference knows no contrib op; the quantiser needs the type
        else:
            scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        if bias is not None:
            scores = self.op("Add", [scores, bias])
        return self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])

    def one_position_heads(self, x: str, heads: int, head_dim: int) -> str:
        """[batch, 1, d] -> [batch, heads, 1, head_dim]: with one position a reshape, no transpose."""
        return self.op("Reshape", [x, self.ints(0, heads, 1, head_dim)])

    def one_position_merge(self, x: str, d_model: int) -> str:
        return self.op("Reshape", [x, self.ints(0, 1, d_model)])

    def feed_forward(self, x: str, prefix: str, activation: str) -> str:
        hidden = self.linear(x, f"{prefix}.fc1")
        if activation in ("swish", "silu"):
            hidden = self.op("Mul", [hidden, self.op("Sigmoid", [hidden])])
        elif activation == "relu":
            hidden = self.op("Relu", [hidden])
        else:
            hidden = self.op("Gelu", [hidden])  # opset 20 op; onnxruntime has it as a contrib fallback
        return self.linear(hidden, f"{prefix}.fc2")

    def padding_bias(self, mask: str) -> str:
        """int64 [batch, length] of 1/0 -> float [batch, 1, 1, length] of 0/-1e9."""
        from onnx import TensorProto

        as_float = self.op("Cast", [mask], to=TensorProto.FLOAT)
        bias = self.op("Mul", [self.op("Sub", [self.scalar(1.0), as_float]), self.scalar(_MASKED)])
        return self.op("Unsqueeze", [bias, self.ints(1, 2)])

    def int8_table(self, name: str, block: int, rows: list[int] | None = None) -> tuple[str, str]:
        """The int8 blocks and scales of weight ``name`` (a [rows, d] table; only ``rows`` when
        given, in that order), as constants."""
        import hashlib

        table = self.weights[name] if rows is None else self.weights[name][rows]
        # named by content: a tied table is one tensor in every graph that uses it
        key = hashlib.sha256(table.tobytes()).hexdigest()[:12]
        if f"table_{key}_q8" not in self.initializers:
            q, scales = int8_blocks(table, block)  # per-row blocks: a row subset quantises as in the whole
            self.const(f"table_{key}_q8", q)
            self.const(f"table_{key}_scales", scales)
        return f"table_{key}_q8", f"table_{key}_scales"

    def embed(self, ids: str, prefix: str, first: str, end: str, scale: float, int8_block: int | None = None,
              output_ids: list[int] | None = None, decoder: bool = False) -> str:
        """Scaled token embeddings plus the sinusoidal rows ``first``..``end`` (1-element int64 tensors).

        With ``output_ids`` the table is held as the output vocabulary's rows (what the output
        projection multiplies) and the rest: a ``decoder``'s ids index the former directly, an
        encoder's model ids pick their row from either."""
        import numpy as np

        name = f"{prefix}.embed_tokens.weight"
        if int8_block and output_ids is None:
            tokens = self.int8_rows(*self.int8_table(name, int8_block), ids, scale)
        elif int8_block and decoder:
            tokens = self.int8_rows(*self.int8_table(name, int8_block, output_ids), ids, scale)
        elif int8_block:  # an encoder's model ids: their position in [output ids..., the rest...]
            kept = set(output_ids)
            rest = [i for i in range(self.weights[name].shape[0]) if i not in kept]
            order = np.empty(len(output_ids) + len(rest), np.int64)
            order[output_ids + rest] = np.arange(len(order))
            split = self.op("Gather", [self.const("model_to_split", order), ids], axis=0)
            kept_table = self.int8_table(name, int8_block, output_ids)
            if not rest:
                tokens = self.int8_rows(*kept_table, split, scale)
            else:
                width = self.ints(len(output_ids))
                from_kept = self.int8_rows(*kept_table, self.op("Min", [split, self.ints(len(output_ids) - 1)]), scale)
                from_rest = self.int8_rows(*self.int8_table(name, int8_block, rest),
                                           self.op("Max", [self.op("Sub", [split, width]), self.ints(0)]), scale)
                is_kept = self.op("Unsqueeze", [self.op("Less", [split, width]), self.ints(-1)])
                tokens = self.op("Where", [is_kept, from_kept, from_rest])
        else:
            if output_ids is not None and decoder:  # output-vocabulary positions -> model ids
                ids = self.op("Gather", [self.const("output_to_model", np.array(output_ids, np.int64)), ids], axis=0)
            tokens = self.op("Gather", [self.const(name, self.weights[name]), ids], axis=0)
            if scale != 1.0:
                tokens = self.op("Mul", [tokens, self.scalar(scale)])
        table = self.const(f"{prefix}.embed_positions", self.weights[f"{prefix}.embed_positions.weight"])
        # a Slice of the table, not a Gather of a Range: onnxruntime 1.32 rewrites the latter
        # into a Slice with scalar bounds, which then fails at run time
        return self.op("Add", [tokens, self.op("Slice", [table, first, end, self.ints(0)])])

    def int8_rows(self, q8: str, scales: str, ids: str, scale: float) -> str:
        """Rows ``ids`` of an int8 table, dequantised: (q - 128) * scale, sqrt(d) folded into the scales."""
        from onnx import TensorProto

        embed_scales = self.const(f"{scales}_x{scale:g}", _array(self.initializers[scales]) * scale)
        rows = self.op("Sub", [self.op("Cast", [self.op("Gather", [q8, ids], axis=0)], to=TensorProto.FLOAT),
                               self.scalar(128.0)])
        block_scales = self.op("Unsqueeze", [self.op("Gather", [embed_scales, ids], axis=0), self.ints(-1)])
        return self.op("Reshape", [self.op("Mul", [rows, block_scales]), self.ints(0, 0, -1)])

    def graph(self, name: str, inputs: list, outputs: list):
        from onnx import helper

        from onnx import TensorProto

        declared = [helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in self.float_values]
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=list(self.initializers.values()),
                                 value_info=declared)


def _array(tensor):
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _io(name: str, elem_type: str, shape: list):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, {"int64": TensorProto.INT64, "float": TensorProto.FLOAT}[elem_type], shape)


def _encoder(weights: dict, dims: _Dims):
    g = _Graph(weights, dims)
    heads, head_dim = dims.encoder_heads, dims.d_model // dims.encoder_heads
    scaling = head_dim ** -0.5
    length = g.op("Shape", ["input_ids"], start=1, end=2)
    x = g.embed("input_ids", "model.encoder", g.ints(0), length, dims.embed_scale,
                int8_block=dims.block if dims.int8_level is not None else None, output_ids=dims.output_ids)
    if g.attention_op:
        from onnx import TensorProto

        mask = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)
    else:
        bias = g.padding_bias("attention_mask")
    for layer in range(dims.encoder_layers):
        p = f"model.encoder.layers.{layer}"
        q, k, v = g.fused_linear(x, [f"{p}.self_attn.{n}_proj" for n in "qkv"], [scaling, 1.0, 1.0])
        if g.attention_op:
            context = g.multi_head_attention(q, k, v, heads, mask=mask)
        else:
            context = g.merge_heads(g.attend(g.heads(q, heads, head_dim), g.heads(k, heads, head_dim),
                                             g.heads(v, heads, head_dim), bias), dims.d_model)
        x = g.residual_norm(x, g.linear(context, f"{p}.self_attn.out_proj"), f"{p}.self_attn_layer_norm")
        x = g.residual_norm(x, g.feed_forward(x, p, dims.activation), f"{p}.final_layer_norm")
    g.name("Identity", [x], "last_hidden_state")
    return g.graph("marian_encoder",
                   [_io("input_ids", "int64", ["batch", "sequence"]), _io("attention_mask", "int64", ["batch", "sequence"])],
                   [_io("last_hidden_state", "float", ["batch", "sequence", dims.d_model])])


def _decoder(weights: dict, dims: _Dims, *, first: bool):
    """The first step (reads the encoder output, returns every cache) or a later one (reads the caches)."""
    g = _Graph(weights, dims)
    heads, head_dim, d = dims.heads, dims.d_model // dims.heads, dims.d_model
    scaling = head_dim ** -0.5
    kv_shape = lambda length: ["batch", heads, length, head_dim]  # noqa: E731
    inputs = [_io("input_ids", "int64", ["batch", 1]), _io("encoder_attention_mask", "int64", ["batch", "sequence"])]
    outputs = [_io("logits", "float", ["batch", 1, dims.out_vocab])]
    if first:
        inputs.append(_io("encoder_hidden_states", "float", ["batch", "sequence", d]))
        position = g.ints(0)
        following = g.ints(1)
    else:
        for layer in range(dims.decoder_layers):
            inputs += [_io(f"past_key_values.{layer}.decoder.{kv}", "float", kv_shape("past")) for kv in ("key", "value")]
            inputs += [_io(f"past_key_values.{layer}.encoder.{kv}", "float", kv_shape("sequence"))
                       for kv in ("key", "value")]
        # the new token's position is the number of tokens already cached
        position = g.op("Shape", ["past_key_values.0.decoder.key"], start=2, end=3)
        following = g.op("Add", [position, g.ints(1)])
    x = g.embed("input_ids", "model.decoder", position, following, dims.embed_scale,
                int8_block=dims.block if dims.int8_level is not None else None, output_ids=dims.output_ids,
                decoder=True)
    if g.attention_op:
        from onnx import TensorProto

        mask = g.op("Cast", ["encoder_attention_mask"], to=TensorProto.INT32)
    else:
        bias = g.padding_bias("encoder_attention_mask")
    for layer in range(dims.decoder_layers):
        p = f"model.decoder.layers.{layer}"
        q, k, v = g.fused_linear(x, [f"{p}.self_attn.{n}_proj" for n in "qkv"], [scaling, 1.0, 1.0])
        names = (f"present.{layer}.decoder.key", f"present.{layer}.decoder.value")
        outputs += [_io(name, "float", kv_shape("total")) for name in names]
        past = None if first else (f"past_key_values.{layer}.decoder.key", f"past_key_values.{layer}.decoder.value")
        if g.attention_op:  # one query attends to every cached position and itself: no causal mask needed
            context, _, _ = g.multi_head_attention(q, k, v, heads, past=past, present=names)
        else:
            if past:
                k, v = g.one_position_heads(k, heads, head_dim), g.one_position_heads(v, heads, head_dim)
                k, v = (g.name("Concat", [cached, new], name, axis=2) for cached, new, name in zip(past, (k, v), names))
            else:
                k, v = (g.name("Reshape", [new, g.ints(0, heads, 1, head_dim)], name) for new, name in zip((k, v), names))
            context = g.one_position_merge(g.attend(g.one_position_heads(q, heads, head_dim), k, v, None), d)
        x = g.residual_norm(x, g.linear(context, f"{p}.self_attn.out_proj"), f"{p}.self_attn_layer_norm")

        if first:  # the cross-attention keys and values are computed once, from the encoder output
            ck, cv = g.fused_linear("encoder_hidden_states", [f"{p}.encoder_attn.k_proj", f"{p}.encoder_attn.v_proj"],
                                    [1.0, 1.0])
            ck = g.name("Transpose", [g.op("Reshape", [ck, g.ints(0, 0, heads, head_dim)])],
                        f"present.{layer}.encoder.key", perm=[0, 2, 1, 3])
            cv = g.name("Transpose", [g.op("Reshape", [cv, g.ints(0, 0, heads, head_dim)])],
                        f"present.{layer}.encoder.value", perm=[0, 2, 1, 3])
            outputs += [_io(ck, "float", kv_shape("sequence")), _io(cv, "float", kv_shape("sequence"))]
        else:
            ck, cv = f"past_key_values.{layer}.encoder.key", f"past_key_values.{layer}.encoder.value"
        cq = g.linear(x, f"{p}.encoder_attn.q_proj", scaling)
        if g.attention_op:
            context = g.multi_head_attention(cq, ck, cv, heads, mask=mask)
        else:
            context = g.one_position_merge(g.attend(g.one_position_heads(cq, heads, head_dim), ck, cv, bias), d)
        x = g.residual_norm(x, g.linear(context, f"{p}.encoder_attn.out_proj"), f"{p}.encoder_attn_layer_norm")
        x = g.residual_norm(x, g.feed_forward(x, p, dims.activation), f"{p}.final_layer_norm")
    rows = slice(None) if dims.output_ids is None else dims.output_ids  # the output projection's rows
    if dims.int8_level is not None:
        q8, scales = g.int8_table("lm_head.weight", dims.block, dims.output_ids)
        logits = g.op("MatMulNBits", [x, q8, scales], domain=MS_DOMAIN, K=d, N=dims.out_vocab, bits=8,
                      block_size=dims.block, accuracy_level=dims.int8_level)
        g.float_values.append(logits)
    else:
        logits = g.op("MatMul", [x, g.const("lm_head.weight_t", weights["lm_head.weight"][rows].T)])
    g.name("Add", [logits, g.const("final_logits_bias", weights["final_logits_bias"][0][rows])], "logits")
    # cross-attention caches are inputs of a later step and outputs of the first: list them after
    # the self-attention ones, as optimum does
    if first:
        self_outputs = [o for o in outputs[1:] if ".decoder." in o.name]
        cross_outputs = [o for o in outputs[1:] if ".encoder." in o.name]
        outputs = outputs[:1] + self_outputs + cross_outputs
    return g.graph("marian_decoder_first_step" if first else "marian_decoder_step", inputs, outputs)

