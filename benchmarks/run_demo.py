"""Run the demo from scratch, time it, and commit-ready copy its report to benchmarks/results/demo/.

    .venv/bin/python benchmarks/run_demo.py [--run-dir runs/demo-bench]

The copied files are the demo's own report (report.json/md/png, which already carry the machine,
versions and settings signature), the run summary (per-model validation metrics and training
wall times), and run-info.json: the exact command, the wall time and the environment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "demo-bench")
    parser.add_argument("--keep", action="store_true", help="resume an existing run dir instead of starting fresh")
    args = parser.parse_args()
    if args.run_dir.exists() and not args.keep:
        shutil.rmtree(args.run_dir)
    command = [sys.executable, "-m", "ekd_edge", "demo", "--run-dir", str(args.run_dir)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start

    from ekd_edge.bench.signature import environment_signature

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "report.png"):
        shutil.copy(args.run_dir / "report" / name, RESULTS / name)
    shutil.copy(args.run_dir / "run.json", RESULTS / "run.json")
    shutil.copy(args.run_dir / "recipe.toml", RESULTS / "recipe.toml")
    # the export manifests hold the parity-gate results (fp32) and int8 agreement
    (RESULTS / "manifests").mkdir(exist_ok=True)
    for manifest in sorted((args.run_dir / "exports").glob("*/manifest.json")):
        shutil.copy(manifest, RESULTS / "manifests" / f"{manifest.parent.name}.json")
    info = {
        "command": "ekd-edge demo --run-dir " + str(args.run_dir.relative_to(ROOT) if args.run_dir.is_relative_to(ROOT) else args.run_dir),
        "wall_s": round(wall, 1),
        "fresh_run_dir": not args.keep,
        "environment": environment_signature(None),
    }
    (RESULTS / "run-info.json").write_text(json.dumps(info, indent=2))
    print(f"demo took {wall / 60:.1f} min; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
