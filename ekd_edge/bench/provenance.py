"""Provenance: the state a measured number came from, recorded the same way by every benchmark.

    prov = Provenance.begin(threads=1, settings={...})    # before any work: commit, load, machine
    ... measure ...
    result["provenance"] = prov.end(data={...}, models=[paths])

The commit is read before anything runs (a tree edited during a long benchmark is not the tree
that was measured) and marked dirty when tracked files differ from it; the load average is taken
before and after, so a reader can see whether anything else ran meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ekd_edge.bench.signature import environment_signature
from ekd_edge.hashing import file_sha256

REPOSITORY = Path(__file__).resolve().parents[2]


def git_state(root: str | os.PathLike = REPOSITORY) -> dict:
    """{"commit": sha or None, "dirty": bool}: the code being run."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        return {"commit": None, "dirty": None}
    return {"commit": head or None, "dirty": bool(status) if head else None}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def model_hashes(paths) -> dict:
    """sha256 of each model's weights (a checkpoint's model.safetensors, a bundle's manifest)."""
    out = {}
    for path in map(Path, paths):
        for name in ("model.safetensors", "manifest.json"):
            if (path / name).is_file():
                out[str(path)] = {name: file_sha256(path / name)}
                break
    return out


@dataclass
class Provenance:
    git: dict
    command: list[str]
    threads: int | None
    load_before: list[float]
    started: float
    settings: dict = field(default_factory=dict)

    @classmethod
    def begin(cls, threads: int | None = None, settings: dict | None = None) -> "Provenance":
        return cls(git=git_state(), command=[sys.executable, *sys.argv], threads=threads,
                   load_before=load_average(), started=time.perf_counter(), settings=dict(settings or {}))

    def end(self, data: dict | None = None, models=()) -> dict:
        return {
            **self.git,
            "command": self.command,
            "environment": environment_signature(self.threads),
            "load_average_before": self.load_before,
            "load_average_after": load_average(),
            "wall_s": round(time.perf_counter() - self.started, 1),
            "settings": self.settings,
            "data": data or {},
            "models": model_hashes(models),
        }


def write_result(out_dir: str | os.PathLike, result: dict, markdown: str) -> Path:
    """A benchmark's committed output: ``result.json`` (everything, provenance included) and
    ``result.md`` (for people), each written atomically; returns the Markdown file."""
    from ekd_edge.files import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "result.json", result)
    return write_text_atomic(out_dir / "result.md", markdown)
