"""Checkpoint -> ONNX bundle: optimum export, optional int8 quantisation, parity gate, manifest.

A bundle is optimum's layout (encoder_model.onnx + decoder_model_merged.onnx + config files) plus
the run's tokenizer files and manifest.json, so ``ORTModelForSeq2SeqLM.from_pretrained(bundle)``
loads it as is. It appears in ``out_dir`` only once complete and (for fp32) once it has passed the
parity gate: everything is built in a sibling temporary directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.export.manifest import (
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
    MANIFEST_NAME,
    MERGED_DECODER_FILE,
    build_manifest,
    write_manifest,
)
from ekd_edge.export.portable import PORTABLE_LEVEL, make_portable, strip_shape_annotations
from ekd_edge.export.parity import DEFAULT_THRESHOLD, parity_failure, token_agreement
from ekd_edge.export.quality_gate import DEFAULT_MAX_DROP, enforce_quality, measure_quality

EXPORT_TASK = "text2text-generation-with-past"
QUANT_ARCHS = ("avx2", "avx512_vnni", "arm64")
QUANT_MODES = (None, "int8")

# Files of optimum's export that a bundle keeps: graphs, model/generation config, and the
# quantisation record when there is one. The tokenizer files come from the checkpoint instead.
_KEPT_EXPORT_FILES = ("config.json", "generation_config.json", "ort_config.json")


def export_bundle(checkpoint_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None,
                  quant_arch: str = "avx512_vnni", parity_texts: list[str] | None = None,
                  parity_threshold: float = DEFAULT_THRESHOLD, max_new_tokens: int = 128, force: bool = False,
                  per_channel: bool = True, keep_fp32: tuple[str, ...] | list[str] = (),
                  quality_data: tuple[list[str], list[str]] | None = None, max_bleu_drop: float = DEFAULT_MAX_DROP,
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
    if quantize and quant_arch not in QUANT_ARCHS:
        raise BundleError(f"unknown quantisation arch {quant_arch!r} (supported: {', '.join(QUANT_ARCHS)})")
    if not 0.0 <= parity_threshold <= 1.0:
        raise BundleError(f"parity threshold {parity_threshold} is outside [0, 1]")
    if max_new_tokens < 1:
        raise BundleError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")

    report(f"checking checkpoint {checkpoint_dir}")
    check_checkpoint(checkpoint_dir)
    missing = [f for f in ("source.spm", "target.spm", "vocab.json") if not (checkpoint_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer files to bundle (missing {', '.join(missing)})")
    _check_destination(out_dir)

    variant = "int8" if quantize else "fp32"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        stage = work / "bundle"
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

        from ekd_edge.data.tokenizer import copy_tokenizer

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
        write_manifest(stage, manifest)

        # Loading proves ORTModelForSeq2SeqLM accepts the layout (merged decoder only) before it ships.
        report("loading the bundle with onnxruntime")
        from ekd_edge.export.bundle import OnnxTranslator

        candidate = OnnxTranslator(stage)
        if parity_texts:
            report(f"checking parity with PyTorch on {len(parity_texts)} sentences")
            parity = _run_parity(checkpoint_dir, candidate, list(parity_texts), max_new_tokens,
                                 gated=quantize is None, threshold=parity_threshold)
            if parity["status"] == "failed":
                message = parity_failure(parity, parity_threshold, label=f"{out_dir}")
                if not force:
                    raise BundleError(message + " (nothing written; force=True writes it anyway)")
                parity["forced"] = True
            manifest["parity"] = parity
            write_manifest(stage, manifest)
        if quality_data:
            src, refs = quality_data
            report(f"quality gate: BLEU of bundle vs checkpoint on {len(src)} validation sentences")
            from ekd_edge.translate import TorchTranslator

            reference = TorchTranslator(quality_reference or checkpoint_dir)
            quality = measure_quality(reference, candidate, src, refs, max_bleu_drop, max_new_tokens)
            quality["reference"] = str(quality_reference or checkpoint_dir)
            manifest["quality_gate"] = enforce_quality(quality, str(out_dir), force)
            write_manifest(stage, manifest)
        del candidate

        report(f"writing {out_dir}")
        _check_destination(out_dir)
        _replace_dir(stage, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"bundle written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, {variant})")
    return manifest


def export_onnx(checkpoint_dir: str | Path, out_dir: str | Path, scratch: str | Path) -> Path:
    """optimum's seq2seq export into ``scratch``, keeping only what a merged-decoder bundle needs in ``out_dir``."""
    from optimum.exporters.onnx import main_export

    checkpoint_dir, out_dir, scratch = Path(checkpoint_dir), Path(out_dir), Path(scratch)
    try:
        with _quiet_export():
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
            with _quiet_export():
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


def _run_parity(checkpoint_dir: Path, candidate, texts: list[str], max_new_tokens: int, gated: bool,
                threshold: float) -> dict:
    from ekd_edge.translate import TorchTranslator

    reference = TorchTranslator(checkpoint_dir)
    result = token_agreement(reference, candidate, texts, max_new_tokens=max_new_tokens)
    if gated:
        status = "passed" if result["rate"] >= threshold else "failed"
    else:
        status = "measured"
    return {"status": status, "gated": gated, "threshold": threshold if gated else None,
            "max_new_tokens": max_new_tokens, **result}


def _check_destination(out_dir: Path) -> None:
    """Only a missing directory, an empty one or an earlier bundle may be (re)placed by an export."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise BundleError(f"{out_dir}: exists and is not a bundle directory; refusing to replace it")
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            json.loads((out_dir / MANIFEST_NAME).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BundleError(f"{out_dir}/{MANIFEST_NAME}: unreadable, so {out_dir} is not known to be a bundle; "
                              "refusing to replace it") from None
        return
    if any(out_dir.iterdir()):
        raise BundleError(f"{out_dir}: exists and holds files that are not an exported bundle (no {MANIFEST_NAME}); "
                          "refusing to overwrite it")


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` by rename; an earlier bundle is moved aside first and removed after."""
    _fsync_files(new)
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


@contextlib.contextmanager
def _quiet_export():
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
