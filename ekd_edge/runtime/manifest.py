"""``manifest.json``: what a bundle holds, and the check that it is intact before anything loads it.

Every file of a bundle is listed with its sha256 and size, so a bundle copied to a device can be
verified before it is trusted; anything missing, changed, added or pointing outside the bundle is
refused with a one-line BundleError. (Writing manifests is the exporter's: export/manifest.py.)
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath

from ekd_edge.errors import BundleError
from ekd_edge.hashing import file_sha256

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "ekd-edge-onnx-bundle"
FORMAT_VERSION = 1

ENCODER_FILE = "encoder_model.onnx"
MERGED_DECODER_FILE = "decoder_model_merged.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
# Without these a bundle cannot translate, whatever the manifest says.
REQUIRED_FILES = ("config.json", ENCODER_FILE, "source.spm", "target.spm", "vocab.json")
# A bundle's "backend" says which runtime reads it; onnx (onnxruntime) unless the manifest says otherwise.
CT2_MODEL_FILE = "ct2/model.bin"
REQUIRED_BY_BACKEND = {
    "onnx": REQUIRED_FILES,
    "ct2": (CT2_MODEL_FILE, "ct2/config.json", "config.json", "source.spm", "target.spm", "vocab.json"),
    # strings in, strings out: tokenizer, search and detokenizer inside one graph (export/onefile.py)
    "onefile": ("model.onnx",),
}


def list_files(bundle_dir: str | Path) -> list[dict]:
    """path/sha256/size of every file under ``bundle_dir`` except the manifest, sorted by path."""
    bundle_dir = Path(bundle_dir)
    entries = []
    for path in sorted(bundle_dir.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(bundle_dir).as_posix()
        if rel == MANIFEST_NAME:
            continue
        entries.append({"path": rel, "sha256": file_sha256(path), "size": path.stat().st_size})
    return entries


def checkpoint_languages(checkpoint_dir: str | Path) -> dict | None:
    """{"src", "tgt"} the checkpoint was trained on (its metrics.json), or None when unknown."""
    try:
        languages = json.loads((Path(checkpoint_dir) / "metrics.json").read_text()).get("languages")
    except (OSError, ValueError, AttributeError):
        return None
    return languages if isinstance(languages, dict) else None


def model_languages(model_dir: str | Path) -> dict | None:
    """The language pair a bundle (manifest.json) or a checkpoint (metrics.json) says it translates."""
    path = Path(model_dir) / MANIFEST_NAME
    if path.is_file():
        try:
            languages = json.loads(path.read_text()).get("languages")
        except (OSError, ValueError, AttributeError):
            return None
        return languages if isinstance(languages, dict) else None
    return checkpoint_languages(model_dir)


def read_manifest(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{path}: not found (not an exported bundle)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt manifest ({_one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: not an ekd-edge bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {version} is newer than this ekd-edge supports ({FORMAT_VERSION})")
    if not isinstance(manifest.get("files"), list):
        raise BundleError(f"{path}: has no file list")
    return manifest


def _safe_relpath(raw, manifest_path: Path) -> PurePosixPath:
    """The entry as a relative path that stays inside the bundle, else BundleError."""
    if not isinstance(raw, str) or not raw.strip():
        raise BundleError(f"{manifest_path}: file entry with an empty or non-text path ({raw!r})")
    if "\\" in raw or "\x00" in raw:
        raise BundleError(f"{manifest_path}: file entry {raw!r} uses characters not allowed in bundle paths")
    rel = PurePosixPath(raw)
    if rel.is_absolute() or PureWindowsPath(raw).drive:
        raise BundleError(f"{manifest_path}: file entry {raw!r} is an absolute path; bundle paths must be relative")
    if ".." in rel.parts:
        raise BundleError(f"{manifest_path}: file entry {raw!r} points outside the bundle")
    if rel.as_posix() in (".", MANIFEST_NAME):
        raise BundleError(f"{manifest_path}: file entry {raw!r} is not a bundle file")
    return rel


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check every listed file's size and sha256, and that nothing is missing or added; returns the manifest."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    manifest = read_manifest(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    root = bundle_dir.resolve()

    listed: dict[str, dict] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise BundleError(f"{manifest_path}: malformed file entry {entry!r}")
        rel = _safe_relpath(entry.get("path"), manifest_path)
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
            raise BundleError(f"{manifest_path}: entry {rel} lacks a sha256 or size")
        listed[rel.as_posix()] = entry

    backend = manifest.get("backend", "onnx")
    if backend not in REQUIRED_BY_BACKEND:
        raise BundleError(f"{manifest_path}: unknown backend {backend!r} (supported: {', '.join(REQUIRED_BY_BACKEND)})")
    missing_required = [name for name in REQUIRED_BY_BACKEND[backend] if name not in listed]
    if backend == "onnx" and not any(name in listed for name in (MERGED_DECODER_FILE, DECODER_FILE)):
        missing_required.append(MERGED_DECODER_FILE)
    if missing_required:
        raise BundleError(f"{manifest_path}: incomplete bundle, manifest lists no {', '.join(missing_required)}")

    missing = []
    for rel, entry in listed.items():
        path = bundle_dir / rel
        # A symlink inside the bundle could still lead out of it.
        if not path.resolve().is_relative_to(root):
            raise BundleError(f"{path}: resolves outside the bundle")
        if not path.is_file():
            missing.append(rel)
    if missing:
        raise BundleError(f"{bundle_dir}: incomplete bundle, missing {', '.join(sorted(missing))}")

    present = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if not p.is_dir()}
    extra = sorted(present - set(listed) - {MANIFEST_NAME})
    if extra:
        raise BundleError(f"{bundle_dir}: files not listed in {MANIFEST_NAME}: {', '.join(extra)}")

    for rel, entry in listed.items():
        path = bundle_dir / rel
        size = path.stat().st_size
        if size != entry["size"]:
            raise BundleError(f"{path}: size {size} differs from manifest ({entry['size']}); the bundle was modified")
        if file_sha256(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 differs from manifest; the bundle was modified")
    return manifest


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
