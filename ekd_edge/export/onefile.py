"""The one-file model: strings in, strings out, the whole decode loop inside ONNX Runtime.

``model.onnx`` chains four pieces in one graph, so an app translates with a single ``run``:

1. ``SentencepieceTokenizer`` (onnxruntime-extensions) turns each text into SentencePiece ids;
   the graph pads them into a batch, appends EOS as MarianTokenizer does and caps the length at
   the model's position table.
2. ``com.microsoft.BeamSearch`` (model_type 1, the encoder-decoder flavour) runs two subgraphs
   built here from three graphs: an *init* subgraph (encoder + first decoder step, which also
   returns the cross-attention keys/values) and a *step* subgraph (the decoder with past
   keys/values). Beam size and maximum length are graph inputs. The three graphs are written
   from the weights by export/marian_graph.py ("lean", the default: a decoder step has under a
   third of the traced graph's nodes) or traced by optimum ("optimum"); onnxruntime 1.32's
   GreedySearch op would skip the beam bookkeeping but accepts decoder-only models only.
3. Unknown-token ids are mapped to padding, so the text matches ``decode(skip_special_tokens=True)``.
4. ``SentencepieceDecoder`` (one row at a time, inside a ``Loop``) turns ids back into text,
   stripped like MarianTokenizer's output.

The subgraph interface is the one ORT's T5 generation path expects: the init subgraph takes
int32 ``encoder_input_ids``/``encoder_attention_mask``/``decoder_input_ids`` and returns
``logits``, ``encoder_hidden_states`` and ``present_{key,value}_{self,cross}_<layer>``; the step
subgraph takes ``input_ids``, ``encoder_attention_mask`` and the ``past_*`` tensors in the same
order and returns ``logits`` and the self-attention ``present_*``. Adapters (casts to int64,
renames) wrap the graphs, whose Marian specifics (scaled embeddings, final_logits_bias) are
already inside; both sources use optimum's input and output names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ekd_edge.defaults import MAX_BLEU_DROP, PARITY_THRESHOLD
from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.export.manifest import build_manifest
from ekd_edge.export.marian_graph import DEFAULT_FUSED_OPS, block_size_for, write_marian_graphs
from ekd_edge.data.tokenizer import sentencepiece_id_maps
from ekd_edge.hashing import file_sha256
from ekd_edge.runtime.onefile_engine import (
    LAYOUT,
    MAX_NEW_TOKENS_INPUT,
    MODEL_FILE,
    NUM_BEAMS_INPUT,
    TEXT_INPUT,
    TOKEN_IDS_OUTPUT,
    TRANSLATION_OUTPUT,
    OneFileTranslator,
)
from ekd_edge.runtime.session import PORTABLE_LEVEL

CONTRIB_DOMAIN = "ai.onnx.contrib"
MS_DOMAIN = "com.microsoft"
_OPSET = 18
GRAPH_SOURCES = ("lean", "optimum")
_INT64_MAX = 2**63 - 1


def export_onefile(checkpoint_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None,
                   quant_arch: str | None = None, parity_texts: list[str] | None = None,
                   parity_threshold: float = PARITY_THRESHOLD, max_new_tokens: int = 128, num_beams: int = 1,
                   quality_data: tuple[list[str], list[str]] | None = None, max_bleu_drop: float = MAX_BLEU_DROP,
                   quality_reference: str | Path | None = None,
                   portable: bool = False, graphs: str = "lean", int8_kernel: str = "dynamic",
                   tie_int8_embeddings: bool = True, output_ids: list[int] | None = None,
                   fused_ops: tuple[str, ...] = DEFAULT_FUSED_OPS, force: bool = False,
                   progress=None) -> dict:
    """Export a Marian checkpoint to ``out_dir/model.onnx`` + ``manifest.json``; returns the manifest.

    ``max_new_tokens`` and ``num_beams`` are the defaults recorded for apps (the graph takes both
    as inputs) and the settings of the parity check: with ``parity_texts`` the model's token ids
    are compared with PyTorch ``generate``; an fp32 export below ``parity_threshold`` is refused
    unless ``force``, an int8 export's agreement is recorded. With ``quality_data`` the BLEU gate
    runs as for every format (export/staging.py). ``portable`` rewrites the encoder and
    decoder graphs for identical tokens on x86 and ARM (export/portable.py); sessions then run at
    onnxruntime's "basic" optimisation level, as the manifest records. ``graphs`` picks where the
    encoder and decoder graphs come from: "lean" writes them from the weights
    (export/marian_graph.py: a fraction of the nodes, so a faster step), "optimum" traces the
    PyTorch model with optimum. ``int8_kernel`` is how an int8 model multiplies (INT8_KERNELS in
    export/onnx_export.py); portable numerics are defined for the dynamic kernel only. With a
    block-wise kernel and lean graphs, ``tie_int8_embeddings`` stores the embedding table once, as
    int8 blocks that both the lookups and the output projection read (export/marian_graph.py).
    ``output_ids`` (lean graphs only; data.tokenizer.target_side_ids makes one) is an output
    vocabulary: the model ids the decoder may produce (the special tokens are added), so each step
    multiplies and searches only those rows; the model still outputs model ids. ``fused_ops``
    (lean, non-portable graphs) are the onnxruntime contrib kernels the graphs use
    (export/marian_graph.py FUSED_OPS).
    """
    from ekd_edge.export.onnx_export import (INT8_KERNELS, QUANT_ARCHS, QUANT_MODES, make_graphs_portable,
                                             quantize_blockwise_int8, quantize_int8)
    from ekd_edge.export.staging import Gates, staged_export
    from ekd_edge.models.checkpoint import check_checkpoint

    report = progress or (lambda message: None)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if quantize not in QUANT_MODES:
        raise BundleError(f"unknown quantisation {quantize!r} (supported: int8, or none for fp32)")
    if quant_arch is None or quant_arch == "host":
        from ekd_edge.host import int8_arch

        quant_arch = int8_arch()
    if quantize and quant_arch not in QUANT_ARCHS:
        raise BundleError(f"unknown quantisation arch {quant_arch!r} (supported: {', '.join(QUANT_ARCHS)})")
    if int8_kernel not in INT8_KERNELS:
        raise BundleError(f"unknown int8 kernel {int8_kernel!r} (supported: {', '.join(INT8_KERNELS)})")
    if quantize and portable and int8_kernel != "dynamic":
        raise BundleError(f"portable numerics need the dynamic int8 kernel (got {int8_kernel!r})")
    if graphs not in GRAPH_SOURCES:
        raise BundleError(f"unknown graph source {graphs!r} (supported: {', '.join(GRAPH_SOURCES)})")
    if output_ids is not None and graphs != "lean":
        raise BundleError("an output vocabulary needs the lean graphs (graphs='lean')")
    if max_new_tokens < 1 or num_beams < 1:
        raise BundleError(f"max_new_tokens and num_beams must be at least 1 (got {max_new_tokens}, {num_beams})")
    report(f"checking checkpoint {checkpoint_dir}")
    check_checkpoint(checkpoint_dir)
    if not (checkpoint_dir / "source.spm").is_file():
        raise CheckpointError(f"{checkpoint_dir}: no source.spm, so no tokenizer to build into the model")

    config = json.loads((checkpoint_dir / "config.json").read_text())
    generation = _generation_settings(checkpoint_dir, config)
    if output_ids is not None:
        specials = {generation[k] for k in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "unk_token_id")}
        output_ids = sorted(set(output_ids) | specials)
        if output_ids[0] < 0 or output_ids[-1] >= generation["vocab_size"]:
            raise BundleError(f"output vocabulary: ids must lie in 0..{generation['vocab_size'] - 1} "
                              f"(got {output_ids[0]}..{output_ids[-1]})")
    variant = f"{LAYOUT}-int8" if quantize else f"{LAYOUT}-fp32"
    block = block_size_for(int(config["d_model"])) or 32  # MatMulNBits pads inputs to whole blocks

    def convert(stage: Path, work: Path) -> dict:
        graph_dir = work / "graphs"
        if graphs == "lean":
            report("writing encoder and decoder graphs from the weights")
            # block-wise kernels: the tied embedding table is stored once, as int8 blocks
            level = {"blockwise": 4, "weight-only": 0}.get(int8_kernel) if quantize and tie_int8_embeddings else None
            write_marian_graphs(checkpoint_dir, graph_dir, int8_embeddings=level, portable=portable,
                                output_ids=output_ids, fused_ops=fused_ops)
        else:
            report("exporting encoder and decoders to ONNX with optimum")
            export_separate_graphs(checkpoint_dir, graph_dir, scratch=work / "raw")
        if quantize and int8_kernel == "dynamic":
            report(f"quantising to int8 ({quant_arch})")
            quantize_int8(graph_dir, quant_arch, scratch=work / "quantized")
        elif quantize:
            report(f"quantising to int8 ({int8_kernel}, blocks of {block})")
            quantize_blockwise_int8(graph_dir, int8_kernel, block)
        portable_info = None
        if portable:
            report("rewriting Softmax/LayerNormalization for portable numerics")
            portable_info = make_graphs_portable(graph_dir)

        report("building the one-file graph")
        source_to_model, decoding_spm = sentencepiece_id_maps(checkpoint_dir)
        model = build_onefile_model(graph_dir / "encoder_model.onnx", graph_dir / "decoder_model.onnx",
                                    graph_dir / "decoder_with_past_model.onnx",
                                    (checkpoint_dir / "source.spm").read_bytes(), **generation,
                                    decoding_spm_model=decoding_spm, source_to_model=source_to_model,
                                    output_ids=output_ids)
        _save_model(model, stage / MODEL_FILE)
        settings = {"layout": LAYOUT, "graphs": graphs, "quantize": quantize,
                    "id_maps": {"source_to_model": source_to_model is not None,
                                "decoding_pieces": decoding_spm is not None},
                    "output_vocabulary": None if output_ids is None else len(output_ids),
                    "fused_ops": sorted(fused_ops) if graphs == "lean" and not portable else [],
                    "int8_kernel": int8_kernel if quantize else None,
                    "int8_embeddings": graphs == "lean" and bool(quantize) and int8_kernel != "dynamic"
                    and tie_int8_embeddings,
                    "arch": quant_arch if quantize and int8_kernel == "dynamic" else None,
                    "max_new_tokens": max_new_tokens, "num_beams": num_beams, **generation,
                    "numerics": "portable" if portable else "fast",
                    "graph_optimization_level": PORTABLE_LEVEL if portable else "all"}
        manifest = _onefile_manifest(stage, variant, checkpoint_dir, settings)
        if portable_info:
            manifest["portable"] = portable_info
        return manifest

    gates = Gates(parity_texts=parity_texts, parity_threshold=parity_threshold, exact=quantize is None,
                  quality_data=quality_data, max_bleu_drop=max_bleu_drop, quality_reference=quality_reference,
                  max_new_tokens=max_new_tokens)
    manifest = staged_export(checkpoint_dir, out_dir, convert=convert, load=OneFileTranslator, gates=gates,
                             force=force, report=report)
    report(f"one-file model written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, {variant})")
    return manifest


def export_separate_graphs(checkpoint_dir: Path, out_dir: Path, scratch: Path) -> Path:
    """optimum's encoder, first-step decoder and with-past decoder (not the merged one) in ``out_dir``."""
    from optimum.exporters.onnx import main_export

    from ekd_edge.export.onnx_export import EXPORT_TASK, quiet_export

    try:
        with quiet_export():
            main_export(str(checkpoint_dir), scratch, task=EXPORT_TASK, library_name="transformers",
                        local_files_only=True, do_validation=False, device="cpu", no_post_process=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BundleError(f"{checkpoint_dir}: ONNX export failed ({type(exc).__name__}: {detail})") from None
    needed = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json")
    missing = [name for name in needed if not (scratch / name).is_file()]
    if missing:
        raise BundleError(f"{checkpoint_dir}: ONNX export produced no {', '.join(missing)}")
    if any(scratch.glob("*.onnx_data")):
        raise BundleError(f"{checkpoint_dir}: model too large for a single-file ONNX graph (>2 GB)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in needed:
        shutil.move(scratch / name, out_dir / name)
    return out_dir


def _generation_settings(checkpoint_dir: Path, config: dict) -> dict:
    """Token ids and limits the graph bakes in, from config.json and generation_config.json."""
    generation = {}
    if (checkpoint_dir / "generation_config.json").is_file():
        generation = json.loads((checkpoint_dir / "generation_config.json").read_text())

    def pick(key):
        value = generation.get(key, config.get(key))
        if not isinstance(value, int):
            raise CheckpointError(f"{checkpoint_dir}/config.json: {key} is missing or not an integer")
        return value

    forced_eos = generation.get("forced_eos_token_id", config.get("forced_eos_token_id"))
    eos = pick("eos_token_id")
    return {
        "pad_token_id": pick("pad_token_id"),
        "eos_token_id": eos,
        "decoder_start_token_id": pick("decoder_start_token_id"),
        "unk_token_id": 2,
        "max_positions": int(config["max_position_embeddings"]),
        "num_layers": int(config["decoder_layers"]),
        "num_heads": int(config["decoder_attention_heads"]),
        "d_model": int(config["d_model"]),
        "vocab_size": int(config["vocab_size"]),
        # generate() forces EOS as the last of max_new_tokens; the search then stops one token
        # earlier, which yields the same text.
        "forced_eos": forced_eos == eos,
    }


def _save_model(model, path: Path) -> None:
    import onnx

    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _onefile_manifest(bundle_dir: Path, variant: str, checkpoint_dir: Path, settings: dict) -> dict:
    from importlib.metadata import version

    manifest = build_manifest(bundle_dir, variant=variant, checkpoint_dir=checkpoint_dir, settings=settings,
                              parity={"status": "not run"}, backend=LAYOUT, tokenizer_dir=checkpoint_dir)
    manifest["versions"]["onnxruntime-extensions"] = version("onnxruntime-extensions")
    manifest["tokenizer"]["spm_sha256"] = file_sha256(checkpoint_dir / "source.spm")
    return manifest


# --------------------------------------------------------------------------------------------
# Graph building


def build_onefile_model(encoder_path, decoder_path, decoder_with_past_path, spm_model: bytes, *,
                        pad_token_id: int, eos_token_id: int, decoder_start_token_id: int, unk_token_id: int,
                        max_positions: int, num_layers: int, num_heads: int, d_model: int, vocab_size: int,
                        forced_eos: bool, decoding_spm_model: bytes | None = None,
                        source_to_model: list[int] | None = None, output_ids: list[int] | None = None):
    """The one-file ModelProto from the three graphs (optimum's names) and the SentencePiece model bytes.

    Where the model's ids are not SentencePiece's (a tokenizer adopted from a teacher), the input
    goes through ``source_to_model`` and ``decoding_spm_model`` (pieces in model-id order) turns
    the output back into text (data.tokenizer.sentencepiece_id_maps). With ``output_ids`` the
    graphs' decoders speak in positions of that list (export/marian_graph.py): the search runs
    over those positions and its result is mapped back to model ids."""
    import onnx
    from onnx import TensorProto, helper

    encoder, decoder, decoder_with_past = (onnx.load(str(p)) for p in (encoder_path, decoder_path,
                                                                       decoder_with_past_path))
    # the search's token ids: model ids, or positions in the output vocabulary
    search_id = (lambda model_id: model_id) if output_ids is None else output_ids.index
    search_vocab = vocab_size if output_ids is None else len(output_ids)
    dims = {"layers": num_layers, "heads": num_heads, "d_model": d_model, "vocab": search_vocab}
    init_graph = _init_subgraph(encoder, decoder, dims)
    step_graph = _step_subgraph(decoder_with_past, dims)

    nodes, inits = [], []

    def const(name, dtype, values, dims=None):
        inits.append(helper.make_tensor(name, dtype, dims if dims is not None else [len(values)], values))
        return name

    def node(op, inputs, outputs, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{len(nodes)}", domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    # 1. Tokenise: flat ids + row offsets, then a padded batch with EOS after each (capped) text.
    node("SentencepieceTokenizer",
         [TEXT_INPUT, const("spm_nbest", TensorProto.INT64, [0], []), const("spm_alpha", TensorProto.FLOAT, [0.0], []),
          const("spm_add_bos", TensorProto.BOOL, [False], []), const("spm_add_eos", TensorProto.BOOL, [False], []),
          const("spm_reverse", TensorProto.BOOL, [False], [])],
         ["piece_ids", "row_offsets"], domain=CONTRIB_DOMAIN, model=spm_model)
    zero, one = const("i64_0", TensorProto.INT64, [0]), const("i64_1", TensorProto.INT64, [1])
    minus_one = const("i64_m1", TensorProto.INT64, [-1])
    big = const("i64_max", TensorProto.INT64, [_INT64_MAX])
    starts = node("Slice", ["row_offsets", zero, minus_one], ["row_starts"])
    ends = node("Slice", ["row_offsets", one, big], ["row_ends"])
    raw_lengths = node("Sub", [ends, starts], ["raw_lengths"])
    # MarianTokenizer truncates to max_position_embeddings tokens including the EOS.
    lengths = node("Min", [raw_lengths, const("max_pieces", TensorProto.INT64, [max_positions - 1])], ["lengths"])
    width = node("Add", [node("ReduceMax", [lengths], ["longest"], keepdims=1), one], ["width"])
    positions = node("Range", [const("i64_scalar_0", TensorProto.INT64, [0], []),
                               node("Squeeze", [width, zero], ["width_scalar"]),
                               const("i64_scalar_1", TensorProto.INT64, [1], [])], ["positions"])
    pos_row = node("Unsqueeze", [positions, zero], ["positions_row"])
    len_col = node("Unsqueeze", [lengths, one], ["lengths_col"])
    is_piece = node("Less", [pos_row, len_col], ["is_piece"])
    is_eos = node("Equal", [pos_row, len_col], ["is_eos"])
    flat_index = node("Add", [node("Unsqueeze", [starts, one], ["starts_col"]), pos_row], ["flat_index"])
    safe_index = node("Where", [is_piece, flat_index, const("i64_scalar_0b", TensorProto.INT64, [0], [])],
                      ["safe_index"])
    gathered = node("Gather", ["piece_ids", safe_index], ["gathered_ids"], axis=0)
    if source_to_model is not None:   # SentencePiece ids → the model's (re-numbered, trimmed) ids
        gathered = node("Gather", [const("source_to_model", TensorProto.INT32, source_to_model), gathered],
                        ["model_piece_ids"], axis=0)
    tail = node("Where", [is_eos, const("eos_i32", TensorProto.INT32, [eos_token_id], []),
                          const("pad_i32", TensorProto.INT32, [pad_token_id], [])], ["tail_ids"])
    input_ids = node("Where", [is_piece, gathered, tail], ["input_ids"])
    attention_mask = node("Cast", [node("Or", [is_piece, is_eos], ["is_token"])], ["attention_mask"],
                          to=TensorProto.INT32)

    # 2. Search. ORT's max_length counts the decoder start token; positions beyond the model's
    # table do not exist, so the length is capped there.
    offset = 0 if forced_eos else 1
    max_length = node("Min", [node("Add", [MAX_NEW_TOKENS_INPUT, const("length_offset", TensorProto.INT32, [offset])],
                                   ["requested_length"]),
                              const("max_length_cap", TensorProto.INT32, [max_positions])], ["max_length"])
    # Early stopping: a sentence is finished once num_beams hypotheses have ended. With one beam
    # that is exactly greedy decoding (without it BeamSearch keeps looking past the first EOS for
    # a longer hypothesis that scores better); with more beams it is generate(early_stopping=True),
    # which GenerateTranslator uses too: the two ways of deciding when to stop without it differ
    # (generate's heuristic and onnxruntime's use different lengths and scores), and changed the
    # chosen hypothesis on 5.5 % of test sentences. The weights the encoder and decoder subgraphs
    # share are hoisted into the main graph.
    inits.extend(_hoist_shared_initializers([init_graph, step_graph]))
    _declare_outer_scope_values([init_graph, step_graph], inits)
    search_inputs = [input_ids, max_length, const("min_length", TensorProto.INT32, [0]), NUM_BEAMS_INPUT,
                     const("num_return_sequences", TensorProto.INT32, [1]),
                     const("length_penalty", TensorProto.FLOAT, [1.0]),
                     const("repetition_penalty", TensorProto.FLOAT, [1.0]), "", "", attention_mask]
    nodes.append(helper.make_node("BeamSearch", search_inputs, ["sequences"], name="beam_search", domain=MS_DOMAIN,
                                  model_type=1, eos_token_id=search_id(eos_token_id),
                                  pad_token_id=search_id(pad_token_id),
                                  decoder_start_token_id=search_id(decoder_start_token_id), early_stopping=1,
                                  no_repeat_ngram_size=0, vocab_size=search_vocab, encoder=init_graph,
                                  decoder=step_graph))
    sequences = "sequences"
    if output_ids is not None:
        sequences = node("Gather", [const("output_to_model_i32", TensorProto.INT32, output_ids), sequences],
                         ["model_sequences"], axis=0)
    token_ids = node("Squeeze", [sequences, one], [TOKEN_IDS_OUTPUT])

    # 3.+4. Detokenise row by row (the decoder op takes one sequence); <unk> becomes padding so
    # the text equals decode(skip_special_tokens=True). The texts are a loop-carried value that
    # each iteration extends by one row, not a Loop scan output: onnxruntime 1.22 (the runtime
    # the Android app pins) frees a string scan output twice and crashes.
    ids64 = node("Cast", [token_ids], ["token_ids_i64"], to=TensorProto.INT64)
    clean = node("Where", [node("Equal", [ids64, const("unk_i64", TensorProto.INT64, [unk_token_id], [])], ["is_unk"]),
                           const("pad_i64", TensorProto.INT64, [pad_token_id], []), ids64], ["clean_ids"])
    batch = node("Gather", [node("Shape", [clean], ["clean_shape"]), const("i64_scalar_0c", TensorProto.INT64, [0], [])],
                 ["batch_size"], axis=0)
    inits.append(helper.make_tensor("no_texts", TensorProto.STRING, [0], []))
    body = helper.make_graph(
        [helper.make_node("Gather", [clean, "row"], ["row_ids"], axis=0),
         helper.make_node("SentencepieceDecoder", ["row_ids"], ["row_text"], domain=CONTRIB_DOMAIN,
                          model=decoding_spm_model or spm_model),
         helper.make_node("Reshape", ["row_text", minus_one], ["row_text_1d"]),
         helper.make_node("Concat", ["texts_in", "row_text_1d"], ["texts_out"], axis=0),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "detokenise_row",
        [helper.make_tensor_value_info("row", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("texts_in", TensorProto.STRING, ["rows_done"])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("texts_out", TensorProto.STRING, ["rows_done_next"])])
    texts = node("Loop", [batch, "", "no_texts"], ["texts_unstripped"], body=body)
    # MarianTokenizer strips the decoded text (a final "▁" piece would leave a trailing space).
    node("StringStrip", [texts], [TRANSLATION_OUTPUT], domain=CONTRIB_DOMAIN)

    graph = helper.make_graph(
        nodes, "ekd_edge_onefile_translator",
        [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"]),
         helper.make_tensor_value_info(MAX_NEW_TOKENS_INPUT, TensorProto.INT32, [1]),
         helper.make_tensor_value_info(NUM_BEAMS_INPUT, TensorProto.INT32, [1])],
        [helper.make_tensor_value_info(TRANSLATION_OUTPUT, TensorProto.STRING, ["batch"]),
         helper.make_tensor_value_info(TOKEN_IDS_OUTPUT, TensorProto.INT32, ["batch", "output_length"])],
        initializer=inits)
    opsets = [helper.make_opsetid("", _OPSET), helper.make_opsetid(MS_DOMAIN, 1),
              helper.make_opsetid(CONTRIB_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ekd-edge")
    model.ir_version = min(encoder.ir_version, 10)
    return model


def _hoist_shared_initializers(graphs) -> list:
    """Move the subgraphs' weights to the main graph, one copy per distinct tensor.

    The encoder, the first decoder step and the with-past decoder each carry their own copy of
    e.g. the embedding matrix; subgraphs may read outer-scope values, so one copy serves all.
    """
    import hashlib

    from onnx import numpy_helper

    by_content: dict[tuple, str] = {}
    hoisted = []
    for graph in graphs:
        renames = {}
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(array.tobytes()).hexdigest())
            if key not in by_content:
                by_content[key] = tensor.name
                hoisted.append(_copy(tensor))
            else:
                renames[tensor.name] = by_content[key]
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renames:
                    node.input[i] = renames[name]
        del graph.initializer[:]
    return hoisted


def _declare_outer_scope_values(graphs, outer_initializers) -> None:
    """Give each subgraph a value_info entry for every outer-scope value it reads.

    onnxruntime infers the types of the values a subgraph reads from its parent only for ops
    whose type inference runs subgraph inference (If, Loop, Scan). BeamSearch's does not, so
    older onnxruntime versions (1.22, which the Android app pins, among them) refuse the model at
    load with "input arg (…) does not have type information set by parent node" for every hoisted
    weight; newer ones (1.32) propagate the types themselves, and the declarations change nothing there.
    """
    from onnx import helper

    types = {t.name: (t.data_type, list(t.dims)) for t in outer_initializers}
    for graph in graphs:
        missing = sorted(_outer_references(graph))
        unknown = [name for name in missing if name not in types]
        if unknown:
            raise BundleError(f"subgraph {graph.name}: reads {unknown[:3]} from no weight of the main graph")
        declared = {info.name for info in graph.value_info}
        for name in missing:
            if name not in declared:
                graph.value_info.append(helper.make_tensor_value_info(name, *types[name]))


def _outer_references(graph) -> set:
    """Names a graph (nested subgraphs included) reads but neither defines nor receives as input."""
    import onnx

    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read = set()
    for node in graph.node:
        defined.update(node.output)
        read.update(name for name in node.input if name)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                read.update(_outer_references(attr.g))
    return read - defined


def _copy(tensor):
    from onnx import TensorProto

    out = TensorProto()
    out.CopyFrom(tensor)
    return out


def _past_names(kind: str, num_layers: int) -> list[str]:
    """ORT's naming: key/value per layer, all self-attention tensors before all cross-attention ones."""
    return [f"{kind}_{kv}_{attn}_{layer}" for attn in ("self", "cross") for layer in range(num_layers)
            for kv in ("key", "value")]


def _optimum_names(prefix: str, num_layers: int) -> list[str]:
    return [f"{prefix}.{layer}.{part}.{kv}" for part in ("decoder", "encoder") for layer in range(num_layers)
            for kv in ("key", "value")]


def _prefixed(model, prefix: str):
    """The graph with every node, value and initializer name prefixed, so two graphs can be merged."""
    import onnx.compose

    return onnx.compose.add_prefix(model, prefix, rename_functions=False).graph


def _kv_info(name: str, dims: dict, length: str):
    # BeamSearch sizes its key/value buffers from these declared shapes.
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dims["heads"], length,
                                                                   dims["d_model"] // dims["heads"]])


def _kv_length(name: str) -> str:
    return "sequence" if "cross" in name else ("past_length" if name.startswith("past") else "total_length")


def _init_subgraph(encoder, decoder, dims: dict):
    """Encoder + first decoder step: the BeamSearch ``encoder`` attribute."""
    from onnx import TensorProto, helper

    enc, dec = _prefixed(encoder, "enc/"), _prefixed(decoder, "first/")
    adapters = [
        helper.make_node("Cast", ["encoder_input_ids"], ["enc/input_ids"], to=TensorProto.INT64),
        helper.make_node("Cast", ["encoder_attention_mask"], ["enc/attention_mask"], to=TensorProto.INT64),
        helper.make_node("Identity", ["enc/attention_mask"], ["first/encoder_attention_mask"]),
        helper.make_node("Cast", ["decoder_input_ids"], ["first/input_ids"], to=TensorProto.INT64),
    ]
    # Nodes must stay topologically sorted: the encoder, then this bridge, then the decoder.
    bridge = [helper.make_node("Identity", ["enc/last_hidden_state"], ["first/encoder_hidden_states"]),
              helper.make_node("Identity", ["enc/last_hidden_state"], ["encoder_hidden_states"])]
    renames = [helper.make_node("Identity", ["first/logits"], ["logits"])]
    presents = _past_names("present", dims["layers"])
    for ours, theirs in zip(presents, _optimum_names("first/present", dims["layers"])):
        renames.append(helper.make_node("Identity", [theirs], [ours]))
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "sequence"] if name != "decoder_input_ids"
                                            else ["batch", 1])
              for name in ("encoder_input_ids", "encoder_attention_mask", "decoder_input_ids")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, dims["vocab"]]),
               helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT,
                                             ["batch", "sequence", dims["d_model"]])]
    outputs += [_kv_info(name, dims, "sequence" if "cross" in name else 1) for name in presents]
    return helper.make_graph(adapters + list(enc.node) + bridge + list(dec.node) + renames, "init_step", inputs, outputs,
                             initializer=list(enc.initializer) + list(dec.initializer),
                             value_info=list(enc.value_info) + list(dec.value_info))


def _step_subgraph(decoder_with_past, dims: dict):
    """The decoder with past keys/values: the BeamSearch ``decoder`` attribute."""
    from onnx import TensorProto, helper

    dec = _prefixed(decoder_with_past, "step/")
    adapters = [
        helper.make_node("Cast", ["input_ids"], ["step/input_ids"], to=TensorProto.INT64),
        helper.make_node("Cast", ["encoder_attention_mask"], ["step/encoder_attention_mask"], to=TensorProto.INT64),
    ]
    pasts = _past_names("past", dims["layers"])
    for ours, theirs in zip(pasts, _optimum_names("step/past_key_values", dims["layers"])):
        adapters.append(helper.make_node("Identity", [ours], [theirs]))
    renames = [helper.make_node("Identity", ["step/logits"], ["logits"])]
    presents = _past_names("present", dims["layers"])[: 2 * dims["layers"]]
    for ours, theirs in zip(presents, _optimum_names("step/present", dims["layers"])):
        renames.append(helper.make_node("Identity", [theirs], [ours]))
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", 1]),
              helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT32, ["batch", "sequence"])]
    inputs += [_kv_info(name, dims, _kv_length(name)) for name in pasts]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, dims["vocab"]])]
    outputs += [_kv_info(name, dims, _kv_length(name)) for name in presents]
    return helper.make_graph(adapters + list(dec.node) + renames, "decoder_step", inputs, outputs,
                             initializer=list(dec.initializer), value_info=list(dec.value_info))
