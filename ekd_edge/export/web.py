"""Checkpoint -> web bundle: what a static page needs to translate in the browser, no server.

The one-file model cannot serve there (onnxruntime-web has no onnxruntime-extensions tokenizer
ops), so a web bundle takes optimum's encoder and merged decoder graphs (onnx_export.py, fp32 or
int8) and brings its own JavaScript:

    encoder_model.onnx, decoder_model_merged.onnx   the graphs, run by onnxruntime-web (WebAssembly)
    source.spm, vocab.json                          SentencePiece's model and the piece -> model id map
    config.json, generation_config.json             the model's and generate's settings
    web.json                                        what translator.mjs reads: files, special ids, limits
    translator.mjs                                  tokenise, greedy search, detokenise (runtime/web/)
    runtime/                                        onnxruntime-web and SentencePiece's WebAssembly build,
                                                    copied from the npm packages (package-lock.json)

Tokenisation is SentencePiece itself compiled to WebAssembly, its pieces mapped to model ids
through vocab.json as MarianTokenizer maps them, so adopted or re-numbered vocabularies give the
same ids as in Python. The gates run the bundle's own translator.mjs under Node
(runtime/web_engine.py): fp32 greedy tokens must equal PyTorch's, int8 is BLEU-gated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ekd_edge.defaults import MAX_BLEU_DROP, MAX_NEW_TOKENS, PARITY_THRESHOLD
from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.export.manifest import build_manifest
from ekd_edge.runtime.manifest import ENCODER_FILE, MERGED_DECODER_FILE
from ekd_edge.runtime.web_engine import RUNTIME_DIR, SCRIPTS, SETTINGS_FILE, TRANSLATOR_FILE, WebTranslator

# npm package -> the files of it a page loads (kept under runtime/ with these names)
NPM_FILES = {
    "onnxruntime-web": {"dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
                        "dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
                        "dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm"},
    "@sctg/sentencepiece-js": {"dist/index.js": "sentencepiece.mjs", "LICENSE": "sentencepiece-js.LICENSE"},
}
# sentencepiece.mjs imports Node's "fs" and "buffer" (used in Node only); a page maps both to this
# stub with an import map (web_demo/index.html).
BROWSER_SHIM = "node-builtins.mjs"
ONNXRUNTIME_MODULE = f"{RUNTIME_DIR}/ort.wasm.min.mjs"
SENTENCEPIECE_MODULE = f"{RUNTIME_DIR}/sentencepiece.mjs"
NODE_MODULES_ENV = "EKD_EDGE_NODE_MODULES"
INSTALL_HINT = ("run `npm ci` in the ekd-edge repository (`make web-deps`), or set EKD_EDGE_NODE_MODULES to a "
                "node_modules folder that has them")


def node_modules() -> Path:
    """The node_modules folder holding the npm packages a web bundle copies (package.json's pins)."""
    here = Path(__file__).resolve().parents[2] / "node_modules"   # the repository's, for a checkout
    candidates = [Path(os.environ[NODE_MODULES_ENV])] if os.environ.get(NODE_MODULES_ENV) else []
    candidates += [Path.cwd() / "node_modules", here]
    for folder in candidates:
        if all((folder / package / "package.json").is_file() for package in NPM_FILES):
            return folder
    raise BundleError(f"a web export needs the npm packages {', '.join(NPM_FILES)}: {INSTALL_HINT}")


def npm_versions(modules: Path) -> dict:
    return {package: json.loads((modules / package / "package.json").read_text())["version"] for package in NPM_FILES}


def web_settings(checkpoint_dir: Path, max_new_tokens: int) -> dict:
    """web.json: everything translator.mjs needs besides the files themselves."""
    from ekd_edge.data.tokenizer import load_tokenizer

    config = json.loads((checkpoint_dir / "config.json").read_text())
    generation = checkpoint_dir / "generation_config.json"
    if generation.is_file():   # generate reads these over config.json's
        config.update(json.loads(generation.read_text()))
    tokenizer = load_tokenizer(checkpoint_dir)
    heads = int(config["decoder_attention_heads"])
    return {
        "encoder": ENCODER_FILE, "decoder": MERGED_DECODER_FILE, "tokenizer": "source.spm", "vocab": "vocab.json",
        "translator": TRANSLATOR_FILE,
        "runtime": {"onnxruntime": ONNXRUNTIME_MODULE, "sentencepiece": SENTENCEPIECE_MODULE,
                    "browser_shim": f"{RUNTIME_DIR}/{BROWSER_SHIM}"},
        "special_tokens": list(tokenizer.all_special_tokens),
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
        "unk_token_id": tokenizer.unk_token_id,
        "decoder_start_token_id": config.get("decoder_start_token_id", config["pad_token_id"]),
        "forced_eos_token_id": config.get("forced_eos_token_id"),
        "max_positions": int(config["max_position_embeddings"]),
        "max_new_tokens": max_new_tokens,
        "heads": heads, "head_dim": int(config["d_model"]) // heads,
    }


def export_web(checkpoint_dir: str | Path, out_dir: str | Path, *, quantize: str | None = "int8",
               quant_arch: str = "avx512_vnni", per_channel: bool = True,
               keep_fp32: tuple[str, ...] | list[str] = (), parity_texts: list[str] | None = None,
               parity_threshold: float = PARITY_THRESHOLD, max_new_tokens: int = MAX_NEW_TOKENS,
               quality_data: tuple[list[str], list[str]] | None = None, max_bleu_drop: float = MAX_BLEU_DROP,
               quality_reference: str | Path | None = None, force: bool = False, progress=None) -> dict:
    """Export a Marian checkpoint to a web bundle in ``out_dir``; returns the manifest.

    The graphs are export_bundle's (``quantize``, ``quant_arch``, ``per_channel`` and ``keep_fp32``
    as there; the int8 graphs run on the browser's CPU whatever the arch, which only picks the
    quantiser's settings). The gates of export/staging.py run the finished bundle under Node.
    """
    from ekd_edge.data.tokenizer import copy_tokenizer
    from ekd_edge.export.onnx_export import QUANT_ARCHS, QUANT_MODES, export_onnx, quantize_int8
    from ekd_edge.export.staging import Gates, staged_export
    from ekd_edge.models.checkpoint import check_checkpoint
    from ekd_edge.runtime.web_engine import node_executable

    report = progress or (lambda message: None)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if quantize not in QUANT_MODES:
        raise BundleError(f"unknown quantisation {quantize!r} (supported: int8, or none for fp32)")
    if quantize and quant_arch not in QUANT_ARCHS:
        raise BundleError(f"unknown quantisation arch {quant_arch!r} (supported: {', '.join(QUANT_ARCHS)})")
    modules = node_modules()
    node_executable()   # the gates run the bundle in Node: fail before the export, not after it
    report(f"checking checkpoint {checkpoint_dir}")
    check_checkpoint(checkpoint_dir)
    missing = [f for f in ("source.spm", "vocab.json") if not (checkpoint_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer files to bundle (missing {', '.join(missing)})")
    variant = "web-int8" if quantize else "web-fp32"

    def convert(stage: Path, work: Path) -> dict:
        report("exporting to ONNX")
        export_onnx(checkpoint_dir, work / "graphs", scratch=work / "raw")
        if quantize:
            report(f"quantising to int8 ({quant_arch} settings)")
            quantize_int8(work / "graphs", quant_arch, scratch=work / "quantized", per_channel=per_channel,
                          keep_fp32=keep_fp32)
        for name in (ENCODER_FILE, MERGED_DECODER_FILE, "config.json", "generation_config.json"):
            if not (work / "graphs" / name).is_file():
                raise BundleError(f"{checkpoint_dir}: the ONNX export wrote no {name}, which a web bundle needs")
            shutil.move(work / "graphs" / name, stage / name)
        copy_tokenizer(checkpoint_dir, work / "tokenizer")
        for name in ("source.spm", "vocab.json"):   # all the page's tokenizer reads
            shutil.copy(work / "tokenizer" / name, stage / name)
        settings = web_settings(checkpoint_dir, max_new_tokens)
        (stage / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, ensure_ascii=False) + "\n")
        shutil.copy(SCRIPTS / TRANSLATOR_FILE, stage / TRANSLATOR_FILE)
        runtime = stage / RUNTIME_DIR
        runtime.mkdir()
        shutil.copy(SCRIPTS / BROWSER_SHIM, runtime / BROWSER_SHIM)
        for package, files in NPM_FILES.items():
            for source, name in files.items():
                if not (modules / package / source).is_file():
                    raise BundleError(f"{modules / package}: no {source} (a different version than package.json "
                                      f"pins?): {INSTALL_HINT}")
                shutil.copy(modules / package / source, runtime / name)
        manifest = build_manifest(stage, variant=variant, checkpoint_dir=checkpoint_dir, backend="web",
                                  settings={"quantize": quantize, "arch": quant_arch if quantize else None,
                                            "max_new_tokens": max_new_tokens, "decoding": "greedy"},
                                  parity={"status": "not run"})
        manifest["web_runtime"] = npm_versions(modules)
        manifest["payload"] = payload_sizes(stage)
        if quantize:
            manifest["quantization"] = {"per_channel": per_channel, "keep_fp32": list(keep_fp32)}
        return manifest

    gates = Gates(parity_texts=parity_texts, parity_threshold=parity_threshold, exact=quantize is None,
                  quality_data=quality_data, max_bleu_drop=max_bleu_drop, quality_reference=quality_reference,
                  max_new_tokens=max_new_tokens)
    manifest = staged_export(checkpoint_dir, out_dir, convert=convert, load=WebTranslator, gates=gates,
                             force=force, report=report)
    report(f"web bundle written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, {variant})")
    return manifest


def payload_sizes(bundle_dir: str | Path) -> dict:
    """Bytes a page downloads: the model (graphs, tokenizer, settings) and the runtime (JavaScript, WebAssembly).

    config.json and generation_config.json stay on the server (web.json holds what the page needs)."""
    bundle_dir = Path(bundle_dir)
    model = [ENCODER_FILE, MERGED_DECODER_FILE, "source.spm", "vocab.json", SETTINGS_FILE]
    runtime = [TRANSLATOR_FILE] + [f"{RUNTIME_DIR}/{p.name}" for p in sorted((bundle_dir / RUNTIME_DIR).iterdir())
                                   if p.suffix in (".mjs", ".wasm")]
    size = lambda names: sum((bundle_dir / name).stat().st_size for name in names)  # noqa: E731
    return {"model_bytes": size(model), "runtime_bytes": size(runtime), "model_files": model, "runtime_files": runtime}
