"""Checkpoint -> ONNX bundle: optimum export, optional int8 quantisation, parity gate, manifest.

A bundle is optimum's layout (encoder_model.onnx + decoder_model_merged.onnx + config files) plus
the run's tokenizer files and manifest.json, so ``ORTModelForSeq2SeqLM.from_pretrained(bundle)``
loads it as is. The staging, gates and the rename into ``out_dir`` are export/staging.py's, shared
by every format; this module holds the conversion only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from pathlib import Path

from ekd_edge.defaults import MAX_BLEU_DROP, MAX_NEW_TOKENS, PARITY_THRESHOLD
from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.runtime.manifest import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, MERGED_DECODER_FILE
from ekd_edge.export.manifest import build_manifest
from ekd_edge.data.tokenizer import copy_tokenizer
from ekd_edge.runtime.onnx_engine import OnnxTranslator
from ekd_edge.runtime.session import PORTABLE_LEVEL
from ekd_edge.export.portable import make_portable, strip_shape_annotations
from ekd_edge.export.staging import Gates, staged_export

EXPORT_TASK = "text2text-generation-with-past"
QUANT_ARCHS = ("avx2", "avx512_vnni", "arm64")
QUANT_MODES = (None, "int8")
# How int8 weights are multiplied (one-file model): "dynamic" quantises each activation to int8
# per tensor and runs an int8 GEMM (DynamicQuantizeMatMul); "blockwise" keeps int8 weights with a
# scale per block of inputs and quantises activations per block too (MatMulNBits, accuracy
# level 4); "weight-only" stores the same int8 blocks but multiplies in float32 (MatMulNBits,
# accuracy level 0). benchmarks/engines.py measures each.
INT8_KERNELS = ("dynamic", "blockwise", "weight-only")
# The one-file int8 kernel a profile's kernel = "host" picks for each target, from the engines
# benchmark's "block-wise int8 instead of dynamic int8" lever: on two AVX-512 VNNI Xeons block-wise
# took 0.83x and 0.94x dynamic's latency on the demo's 1.24M student and 1.02-1.09x at 6M and 17M
# (benchmarks/results/engines-26f5218/, engines/), so small students get it. AVX2-only hosts have no
# such measurement yet; they get the same kernel until one exists.
FASTEST_ONEFILE_KERNEL = {"avx512_vnni": "blockwise", "avx2": "blockwise", "arm64": "dynamic"}


def host_int8_kernel(arch: str) -> str:
    return FASTEST_ONEFILE_KERNEL.get(arch, "dynamic")

# Files of optimum's export that a bundle keeps: graphs, model/generation config, and the
# quantisation record when there is one. The tokenizer files come from the checkpoint instead.
_KEPT_EXPORT_FILES = ("config.json", "generation_config.json", "ort_config.json")


def export_bundle(checkpoint_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None,
                  quant_arch: str | None = None, parity_texts: list[str] | None = None,
                  parity_threshold: float = PARITY_THRESHOLD, max_new_tokens: int = MAX_NEW_TOKENS, force: bool = False,
                  per_channel: bool = True, keep_fp32: tuple[str, ...] | list[str] = (),
                  quality_data: tuple[list[str], list[str]] | None = None, max_bleu_drop: float = MAX_BLEU_DROP,
                  quality_reference: str | Path | None = None, mobile: str | None = None,
                  portable: bool = False, progress=None) -> dict:
    """Export a Marian checkpoint to an ONNX bundle in ``out_dir``; returns the manifest.

    ``quantize="int8"`` applies dynamic int8 quantisation for ``quant_arch``. With ``parity_texts``
    the bundle's greedy token ids are compared with PyTorch's: an fp32 bundle below
    ``parity_threshold`` is refused (nothing written) unless ``force``; an int8 bundle's agreement
    is only recorded, since quantisation is expected to flip some near-tied tokens.

    ``per_channel`` picks per-channel (else per-tensor) weight scales; ``keep_fp32`` names nodes
    (substrings of ONNX node names, e.g. ``lm_head``) left unquantised. With ``quality_data``
    (validation sources, references) the bundle's greedy BLEU is compared with the checkpoint's and
    a drop above ``max_bleu_drop`` refuses the bundle unless ``force``; ``quality_reference`` (a
    checkpoint, default ``checkpoint_dir``) is what it is compared with, e.g. the unpruned model.
    ``mobile`` ("arm" or "amd64") adds .ort graphs and required_operators.config.
    ``portable`` rewrites the graphs for identical results on x86 and ARM (ekd_edge/export/portable.py):
    slower, and loaders run it at onnxruntime's "basic" optimisation level, recorded in the manifest.
    """
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

    report(f"checking checkpoint {checkpoint_dir}")
    check_checkpoint(checkpoint_dir)
    missing = [f for f in ("source.spm", "target.spm", "vocab.json") if not (checkpoint_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer files to bundle (missing {', '.join(missing)})")
    variant = "int8" if quantize else "fp32"

    def convert(stage: Path, work: Path) -> dict:
        report("exporting to ONNX")
        export_onnx(checkpoint_dir, stage, scratch=work / "raw")
        if quantize:
            report(f"quantising to int8 ({quant_arch})")
            quantize_int8(stage, quant_arch, scratch=work / "quantized", per_channel=per_channel, keep_fp32=keep_fp32)
        portable_info = None
        if portable:
            report("rewriting Softmax/LayerNormalization for portable numerics")
            portable_info = make_graphs_portable(stage)
        mobile_info = None
        if mobile:
            from ekd_edge.export.mobile import convert_to_ort

            report(f"converting to ORT format ({mobile})")
            mobile_info = convert_to_ort(stage, work / "ort", target_platform=mobile, portable=portable)
        copy_tokenizer(checkpoint_dir, stage)
        settings = {"quantize": quantize, "arch": quant_arch if quantize else None, "max_new_tokens": max_new_tokens,
                    "numerics": "portable" if portable else "fast",
                    "graph_optimization_level": PORTABLE_LEVEL if portable else "all"}
        manifest = build_manifest(stage, variant=variant, checkpoint_dir=checkpoint_dir, settings=settings,
                                  parity={"status": "not run"})
        if quantize:
            manifest["quantization"] = {"per_channel": per_channel, "keep_fp32": list(keep_fp32)}
        if portable_info:
            manifest["portable"] = portable_info
        if mobile_info:
            manifest["mobile"] = mobile_info
        return manifest

    # Loading proves ORTModelForSeq2SeqLM accepts the layout (merged decoder only) before it ships.
    gates = Gates(parity_texts=parity_texts, parity_threshold=parity_threshold, exact=quantize is None,
                  quality_data=quality_data, max_bleu_drop=max_bleu_drop, quality_reference=quality_reference,
                  max_new_tokens=max_new_tokens)
    manifest = staged_export(checkpoint_dir, out_dir, convert=convert, load=OnnxTranslator, gates=gates,
                             force=force, report=report)
    report(f"bundle written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, {variant})")
    return manifest


def export_onnx(checkpoint_dir: str | Path, out_dir: str | Path, scratch: str | Path) -> Path:
    """optimum's seq2seq export into ``scratch``, keeping only what a merged-decoder bundle needs in ``out_dir``."""
    from optimum.exporters.onnx import main_export

    checkpoint_dir, out_dir, scratch = Path(checkpoint_dir), Path(out_dir), Path(scratch)
    try:
        with quiet_export():
            main_export(str(checkpoint_dir), scratch, task=EXPORT_TASK, library_name="transformers",
                        local_files_only=True, do_validation=False, device="cpu")
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BundleError(f"{checkpoint_dir}: ONNX export failed ({type(exc).__name__}: {detail})") from None
    if not (scratch / ENCODER_FILE).is_file():
        raise BundleError(f"{checkpoint_dir}: ONNX export produced no {ENCODER_FILE}")
    # The merged decoder serves both the first step and the cached steps, so the two separate
    # decoders would only double the bundle; without a merged one they are needed.
    if (scratch / MERGED_DECODER_FILE).is_file():
        graphs = [ENCODER_FILE, MERGED_DECODER_FILE]
    elif (scratch / DECODER_FILE).is_file() and (scratch / DECODER_WITH_PAST_FILE).is_file():
        graphs = [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]
    else:
        raise BundleError(f"{checkpoint_dir}: ONNX export produced no usable decoder graph")
    if any((scratch / f"{name}_data").exists() for name in graphs):
        raise BundleError(f"{checkpoint_dir}: model too large for a single-file ONNX graph (>2 GB)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in graphs + [f for f in _KEPT_EXPORT_FILES if (scratch / f).is_file()]:
        shutil.move(scratch / name, out_dir / name)
    return out_dir


def quantize_int8(bundle_dir: str | Path, arch: str, scratch: str | Path, per_channel: bool = True,
                  keep_fp32: tuple[str, ...] | list[str] = ()) -> None:
    """Dynamic int8 quantisation of every graph in ``bundle_dir``, in place, names unchanged.

    optimum's ORTQuantizer handles the If-subgraphs of the merged decoder without duplicating its
    weights (plain ``quantize_dynamic`` makes that file larger than the fp32 one).
    """
    from optimum.onnxruntime import AutoQuantizationConfig, ORTQuantizer

    if arch not in QUANT_ARCHS:
        raise BundleError(f"unknown quantisation arch {arch!r} (supported: {', '.join(QUANT_ARCHS)})")
    bundle_dir, scratch = Path(bundle_dir), Path(scratch)
    graphs = sorted(p.name for p in bundle_dir.glob("*.onnx"))
    for name in graphs:
        excluded = _matching_nodes(bundle_dir / name, keep_fp32)
        qconfig = getattr(AutoQuantizationConfig, arch)(is_static=False, per_channel=per_channel,
                                                        nodes_to_exclude=excluded or None)
        try:
            with quiet_export():
                quantizer = ORTQuantizer.from_pretrained(bundle_dir, file_name=name)
                quantizer.quantize(qconfig, scratch, file_suffix=None)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{bundle_dir / name}: int8 quantisation failed ({type(exc).__name__}: {detail})") from None
    for name in graphs:
        strip_shape_annotations(scratch / name)
        os.replace(scratch / name, bundle_dir / name)
    if (scratch / "ort_config.json").is_file():
        os.replace(scratch / "ort_config.json", bundle_dir / "ort_config.json")


def quantize_blockwise_int8(graph_dir: str | Path, kernel: str, block_size: int) -> None:
    """int8 MatMulNBits weights (symmetric, a scale per ``block_size`` inputs) for every MatMul
    with a constant weight in each graph of ``graph_dir``, in place; ``kernel`` as INT8_KERNELS."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if kernel not in ("blockwise", "weight-only"):
        raise BundleError(f"unknown block-wise int8 kernel {kernel!r} (supported: blockwise, weight-only)")
    for path in sorted(Path(graph_dir).glob("*.onnx")):
        try:
            with quiet_export():
                quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=8, block_size=block_size,
                                                 is_symmetric=True, accuracy_level=4 if kernel == "blockwise" else 0)
                quantizer.process()
                tmp = path.with_name(f".{path.name}.tmp")
                quantizer.model.save_model_to_file(str(tmp))
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{path}: block-wise int8 quantisation failed ({type(exc).__name__}: {detail})") from None
        os.replace(tmp, path)


def make_graphs_portable(bundle_dir: str | Path) -> dict:
    """Apply the portable-numerics rewrite to every graph of a bundle; returns replaced-node counts per file."""
    try:
        return {p.name: make_portable(p) for p in sorted(Path(bundle_dir).glob("*.onnx"))}
    except ValueError as exc:
        raise BundleError(f"{bundle_dir}: portable numerics: {exc}") from None


def _matching_nodes(graph_path: Path, patterns) -> list[str]:
    """Names of the nodes (subgraphs included) whose name contains any of ``patterns``."""
    if not patterns:
        return []
    import onnx

    names: set[str] = set()

    def walk(graph):
        for node in graph.node:
            if any(p in node.name for p in patterns):
                names.add(node.name)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(onnx.load(str(graph_path), load_external_data=False).graph)
    return sorted(names)


@contextlib.contextmanager
def quiet_export():
    """Silence the tracer warnings and library chatter of an export; real failures still raise."""
    loggers = [logging.getLogger(name) for name in ("optimum", "transformers", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
