"""Writing ``manifest.json``: what an exported bundle holds and where it came from.

The format and its verification are the runtime's (runtime/manifest.py): a bundle is checked by
the code that loads it, not by the code that wrote it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ekd_edge.files import write_json_atomic
from ekd_edge.hashing import file_sha256
from ekd_edge.runtime.manifest import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, checkpoint_languages, graph_facts,
                                      is_graph, list_files)
from ekd_edge.models import config_parameters

_VERSIONED_PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")


def library_versions() -> dict:
    """Versions of everything that shaped the exported graphs (a bundle is only as reproducible as these)."""
    from importlib.metadata import PackageNotFoundError, version

    import ekd_edge

    versions = {"ekd_edge": ekd_edge.__version__}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(bundle_dir: str | Path, *, variant: str, checkpoint_dir: str | Path, settings: dict,
                   parity: dict, backend: str = "onnx", tokenizer_dir: str | Path | None = None) -> dict:
    """The manifest of every bundle format. ``tokenizer_dir``: where the vocabulary is read from
    (default the bundle; a one-file model carries its tokenizer inside the graph, so its checkpoint)."""
    from ekd_edge.data.tokenizer import vocab_fingerprint

    bundle_dir, checkpoint_dir = Path(bundle_dir), Path(checkpoint_dir)
    files = list_files(bundle_dir)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variant": variant,
        "files": files,
        "total_size": sum(f["size"] for f in files),
        "versions": library_versions(),
        "source": {
            "checkpoint": str(checkpoint_dir.resolve()),
            "model_sha256": file_sha256(checkpoint_dir / "model.safetensors"),
            "params": config_parameters(checkpoint_dir),
        },
        "languages": checkpoint_languages(checkpoint_dir),
        "tokenizer": {"vocab_fingerprint": vocab_fingerprint(Path(tokenizer_dir or bundle_dir))},
        "settings": dict(settings),
        "parity": dict(parity),
    }


def verified_record(bundle_dir: str | Path, manifest: dict) -> dict:
    """What the gates verified, per graph: the file they ran on and what a loader can check of it
    (runtime/manifest.py), with the gates' verdicts and the weights the graphs came from."""
    bundle_dir = Path(bundle_dir)
    quality = manifest.get("quality_gate") or {}
    return {
        "source_model_sha256": manifest["source"]["model_sha256"],
        "parity": manifest.get("parity", {}).get("status", "not run"),
        "quality_gate": quality.get("status", "not run"),
        "forced": bool(manifest.get("parity", {}).get("forced") or quality.get("forced")),
        "graphs": {entry["path"]: graph_facts(bundle_dir / entry["path"])
                   for entry in manifest["files"] if is_graph(entry["path"])},
    }


def write_manifest(bundle_dir: str | Path, manifest: dict) -> Path:
    return write_json_atomic(Path(bundle_dir) / MANIFEST_NAME, manifest)
