"""What a benchmark number depends on besides the model: machine, software, data and settings.

Latency and memory mean nothing without the CPU and thread count, BLEU nothing without the data,
so every report carries this block.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata

from ekd_edge.host import cpu_flags, cpu_model

# report key -> distribution names to try (the first installed one wins)
_PACKAGES = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "optimum": ("optimum",),
    "sacrebleu": ("sacrebleu",),
    "ekd_edge": ("ekd-edge",),
}


def git_revision(root: str | os.PathLike) -> str:
    """The commit measured, marked "+dirty" when tracked files differ from it ("unknown" outside git)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "") if head else "unknown"


def package_versions() -> dict:
    versions = {}
    for key, dists in _PACKAGES.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    if versions["ekd_edge"] is None:
        from ekd_edge import __version__

        versions["ekd_edge"] = __version__
    return versions


def environment_signature(threads: int | None) -> dict:
    """Machine and software the numbers were measured on; ``threads`` is the intra-op thread setting."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        # in a container or under taskset fewer cores may be usable than exist
        "usable_cores": usable,
        "threads": threads if threads else "engine default",
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def data_signature(data, name: str | None = None) -> dict:
    """Names the evaluation data: a ``ParallelText``'s size, fingerprint and files."""
    return {
        "name": name,
        "n": len(data),
        "fingerprint": data.fingerprint(),
        "src": data.src_path or None,
        "tgt": data.tgt_path or None,
    }


def with_run_context(signature: dict, *, data=None, data_name: str | None = None,
                     settings: dict | None = None) -> dict:
    """A copy of ``signature`` with the evaluation data (a ``ParallelText`` or a ready dict) and settings."""
    out = dict(signature)
    if data is not None:
        out["data"] = dict(data) if isinstance(data, dict) else data_signature(data, data_name)
    if settings is not None:
        out["settings"] = dict(settings)
    return out
