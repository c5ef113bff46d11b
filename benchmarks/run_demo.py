"""Run the demo from scratch, time it, and commit-ready copy its report to benchmarks/results/demo/.

    .venv/bin/python benchmarks/run_demo.py [--run-dir runs/demo-bench]

It runs exactly what `make demo` runs, in two processes so the distillation's memory can be told
apart: `ekd-edge distill demo` (its peak RSS is the kernel's maximum resident set of that process,
from wait4), then `ekd-edge demo` on the same run directory, which finds every model trained and
goes on to export and benchmark. The copied files are the demo's own report (report.json/md/png,
which carry the machine, versions and settings signature), the run summary, the export manifests
(parity results) and run-info.json: the exact commands, wall times, peak RSS, load and environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo"


def git_revision() -> str:
    from ekd_edge.bench.signature import git_revision as revision

    return revision(ROOT)


def run_measured(command: list[str]) -> tuple[int, int]:
    """Exit status and peak resident set (KiB) of one child process."""
    proc = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "demo-bench")
    parser.add_argument("--keep", action="store_true", help="resume an existing run dir instead of starting fresh")
    args = parser.parse_args()
    if args.run_dir.exists() and not args.keep:
        shutil.rmtree(args.run_dir)
    load_before = os.getloadavg()
    revision = git_revision()   # the code that runs, before anything can change the tree
    distill = [sys.executable, "-m", "ekd_edge", "distill", "demo", "--run-dir", str(args.run_dir)]
    demo = [sys.executable, "-m", "ekd_edge", "demo", "--run-dir", str(args.run_dir)]
    start = time.perf_counter()
    distill_status, distill_rss_kib = run_measured(distill)
    distill_wall = time.perf_counter() - start
    if distill_status != 0:
        print(f"distill failed with status {distill_status}", file=sys.stderr)
        return 1
    subprocess.run(demo, check=True, cwd=ROOT)
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
    run_dir = args.run_dir.relative_to(ROOT) if args.run_dir.is_relative_to(ROOT) else args.run_dir
    info = {
        "commands": [f"ekd-edge distill demo --run-dir {run_dir}", f"ekd-edge demo --run-dir {run_dir}"],
        "git_commit": revision,
        "wall_s": round(wall, 1),
        "distill_wall_s": round(distill_wall, 1),
        "distill_peak_rss_mib": round(distill_rss_kib / 1024, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "fresh_run_dir": not args.keep,
        "environment": environment_signature(None),
    }
    (RESULTS / "run-info.json").write_text(json.dumps(info, indent=2))
    print(f"demo took {wall / 60:.1f} min; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
