"""Time `make demo` on a fresh clone, as a new user runs it, and copy its report to benchmarks/results/demo/.

    .venv/bin/python benchmarks/run_demo.py [--clone-dir /tmp/ekd-demo-clone]

It clones this repository's HEAD into an empty directory and runs `make demo` there: the virtual
environment and its install are part of the time, as on a new machine. Run it on a quiet machine:
the load average before and after is recorded, and so is anything that changed the tree (a dirty
tree is measured as HEAD, and marked dirty). The copied files are the demo's own report
(report.json/md/png: every row, the paired comparison, the environment signature), demo.json (the
wall time of each phase), the run summary and recipe, the export manifests (parity and quality
gates), the console log of `make demo`, and run-info.json (commit, command, wall times, the peak
resident set of the whole job, load, environment).
The job's own library versions are in report.json's signature; run-info.json's environment is
the measuring interpreter's (run it with .venv/bin/python for the same package list).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo"
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clone-dir", type=Path, default=Path("/tmp/ekd-demo-clone"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from ekd_edge.bench.provenance import Provenance
    from ekd_edge.files import write_json_atomic

    provenance = Provenance.begin(threads=1, settings={"command": "make demo", "fresh_clone": True})
    if args.clone_dir.exists():
        shutil.rmtree(args.clone_dir)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(args.clone_dir)], check=True)
    log_path = args.clone_dir / "demo-console.log"
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["make", "demo"], cwd=args.clone_dir, stdout=log, stderr=subprocess.STDOUT,
                                env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"make demo failed; log {log_path}", file=sys.stderr)
        return 1

    run_dir = args.clone_dir / "runs" / "demo"
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("run-info.json", "manifests"):
        target = args.out / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for name in ("report.json", "report.md", "report.png"):
        shutil.copy(run_dir / "report" / name, args.out / name)
    for name in ("demo.json", "run.json", "recipe.toml"):
        shutil.copy(run_dir / name, args.out / name)
    shutil.copy(log_path, args.out / "make-demo.log")
    (args.out / "manifests").mkdir()
    for manifest in sorted((run_dir / "exports").glob("*/manifest.json")):
        shutil.copy(manifest, args.out / "manifests" / f"{manifest.parent.name}.json")
    info = provenance.end(data={"corpus": "lo-help-en-de"})
    info.update({"make_demo_wall_s": round(wall, 1), "clone": str(args.clone_dir),
                 # ru_maxrss of the largest process of the job (make and its children)
                 "largest_process_peak_rss_mib": round(usage.ru_maxrss / 1024, 1)})
    write_json_atomic(args.out / "run-info.json", info)
    print(f"make demo took {wall / 60:.1f} min on a fresh clone of {info['commit'][:8]}"
          f"{' (dirty tree: HEAD measured)' if info['dirty'] else ''}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
