"""``manifest.json``: what a bundle holds, and the check that it is intact before anything loads it.

Every file of a bundle is listed with its sha256 and size, so a bundle copied to a device can be
verified before it is trusted; anything missing, changed, added or pointing outside the bundle is
refused with a one-line BundleError. (Writing manifests is the exporter's: export/manifest.py.)

``verified`` records, per graph, the file the export's gates ran on (its sha256) and what the
loader can check of it without running it (how many quantised operators an ONNX graph holds),
beside the gates' verdicts and the sha256 of the weights the graphs were exported from. A graph
swapped for another after the gates ran — a float32 graph copied into an int8 bundle and the file
list rewritten to match — is refused, and a graph must hold what the bundle's variant says (no
quantised operator in an fp32 bundle, some in an int8 one) whatever the record says. All of this
detects damage and mistakes: nothing is signed, so a deliberate edit that rewrites the record and
the graphs consistently is not detected (docs/errors.md).
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
    # a static page's bundle: graphs, tokenizer, web.json and its JavaScript (export/web.py)
    "web": ("web.json", "translator.mjs", ENCODER_FILE, MERGED_DECODER_FILE, "source.spm", "vocab.json"),
}


# Operators only a quantised graph holds (onnxruntime's dynamic and block-wise int8 kernels).
QUANTIZED_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                           "QLinearMatMul", "QGemm", "QAttention", "MatMulNBits", "GatherBlockQuantized",
                           "ConvInteger", "QLinearConv"})


def is_graph(rel: str) -> bool:
    """Whether a bundle file is a model graph (ONNX, ORT format, CTranslate2's model.bin)."""
    return rel.endswith((".onnx", ".ort")) or rel == CT2_MODEL_FILE


def graph_facts(path: str | Path) -> dict:
    """What a loader can check of a graph file without running it: its sha256 and, for ONNX, how
    many quantised operators it holds (subgraphs included)."""
    path = Path(path)
    facts = {"sha256": file_sha256(path)}
    if path.suffix == ".onnx":
        facts["quantized_ops"] = quantized_ops(path)
    return facts


def quantized_ops(path: Path) -> int:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BundleError(f"{path}: not a readable ONNX graph ({_one_line(exc)[:200]})") from None
    count, graphs = 0, [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            count += node.op_type in QUANTIZED_OPS
            for attr in node.attribute:   # If/Loop/BeamSearch bodies
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    return count


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
    check_graphs(bundle_dir, manifest, listed)
    return manifest


def check_graphs(bundle_dir: Path, manifest: dict, listed: dict[str, dict]) -> None:
    """The graphs are those the export's gates ran on (``verified``) and hold what the variant says."""
    manifest_path = bundle_dir / MANIFEST_NAME
    record = manifest.get("verified")
    variant = str(manifest.get("variant", ""))
    precision = "int8" if variant.endswith("int8") else "fp32" if variant.endswith("fp32") else None
    if record is None and precision is None:
        return
    graphs = sorted(rel for rel in listed if is_graph(rel))
    recorded = record.get("graphs") if isinstance(record, dict) else None
    if record is not None:
        if not isinstance(recorded, dict) or not all(isinstance(v, dict) for v in recorded.values()):
            raise BundleError(f"{manifest_path}: malformed verified record")
        for rel in graphs:
            if rel not in recorded:
                raise BundleError(f"{bundle_dir / rel}: a graph the export's gates did not verify "
                                  f"(not in the verified record of {MANIFEST_NAME}); the bundle was modified")
        for rel, facts in recorded.items():
            if rel not in listed or facts.get("sha256") != listed[rel]["sha256"]:
                raise BundleError(f"{bundle_dir / rel}: not the graph the export's gates verified (sha256 differs "
                                  f"from the verified record of {MANIFEST_NAME}); the bundle was modified")
    counts = {rel: quantized_ops(bundle_dir / rel) for rel in graphs if rel.endswith(".onnx")}
    for rel, count in counts.items():
        path = bundle_dir / rel
        if recorded is not None and count != recorded[rel].get("quantized_ops"):
            raise BundleError(f"{path}: {count} quantised operators, but the graph the export verified had "
                              f"{recorded[rel].get('quantized_ops')}; the bundle was modified")
        if precision == "fp32" and count:
            raise BundleError(f"{path}: an int8 graph ({count} quantised operators) in a bundle whose manifest "
                              f"says {variant}; the bundle was modified")
        if precision == "int8" and not count and recorded is None:   # a graph left in float32 is recorded so
            raise BundleError(f"{path}: a float32 graph (no quantised operator) in a bundle whose manifest says "
                              f"{variant}; the bundle was modified")
    if precision == "int8" and counts and not any(counts.values()):
        raise BundleError(f"{bundle_dir}: no graph holds a quantised operator, but the manifest says {variant}; "
                          "the bundle was modified")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
