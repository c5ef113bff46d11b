"""Peak memory of `ekd-edge distill` on a recipe, from a fresh run directory.

    .venv/bin/python benchmarks/distill_memory.py [--recipe ekd_edge/recipes/demo.toml]
        [--run-dir runs/distill-memory] [--out benchmarks/results/distill-memory]

The distillation runs as a child process. Its peak resident set is the kernel's maximum resident
set of that process (ru_maxrss from wait4); the child's VmRSS is also sampled from /proc every
--interval seconds, so the result shows how memory grows over the run (tokenising, teachers,
stages), and the peak of that series is reported beside the kernel's figure. The sampled peak is
usually lower (it misses what happens between samples); it can also exceed the kernel's by a
fraction of a MiB, because the kernel updates its per-thread RSS counts in batches.

The run directory is deleted first, so tokenising, caches and every model are measured from
scratch. Writes result.json (the RSS series included) and result.md to --out. The demo recipe
takes about ten minutes: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
RESULTS = ROOT / "benchmarks" / "results" / "distill-memory"


def rss_kib(pid: int) -> int | None:
    """The current VmRSS of a process in KiB; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None   # a zombie has no VmRSS line


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds until stopped: [(seconds, KiB)]."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((time.perf_counter() - self.start_time, value))
            self.stop.wait(self.interval)


def run_measured(command: list[str], interval: float) -> tuple[int, int, float, list[tuple[float, int]]]:
    """Exit status, kernel peak RSS (KiB), wall seconds and the sampled RSS series of one child."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT)
    sampler = RssSampler(proc.pid, interval)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    sampler.stop.set()   # stop before the reaped pid could be reused by another process
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss, wall, sampler.samples


def fresh_run_dir(run_dir: Path) -> None:
    """Delete a previous run there; refuse a directory that does not hold an ekd-edge run."""
    if run_dir.exists():
        if any(run_dir.iterdir()) and not (run_dir / "recipe.toml").is_file():
            raise SystemExit(f"{run_dir}: holds files that are not an ekd-edge run; choose another --run-dir")
        shutil.rmtree(run_dir)


def corpus_sizes(recipe_arg: str, run_dir: Path) -> dict:
    """Training pairs the recipe reads, and those left after tokenising (from the on-disk corpus)."""
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.distill.recipe import load_recipe

    recipe = load_recipe(recipe_arg)
    data = recipe.data
    corpus = load_corpus(data.corpus, data.src_lang or None, data.tgt_lang or None)
    train = corpus.split("train", empty=data.empty_lines).head(data.max_train_pairs or None)
    sizes: dict = {"corpus": data.corpus, "train_pairs": len(train)}
    tokenized = sorted((run_dir / "cache").glob("pairs-*/meta.json"), key=lambda p: p.stat().st_mtime)
    if tokenized:   # the first one written is the training corpus (seq-KD stages add their own)
        meta = json.loads(tokenized[0].read_text())
        sizes.update({"tokenized_pairs": meta["pairs"], "tokens": meta["tokens"], "dropped_long": meta["dropped_long"]})
    sizes["threads"] = recipe.training.threads or None
    return sizes


def write_results(out: Path, result: dict) -> None:
    from ekd_edge.markdown import count, plain, provenance_footer, table

    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    mib, corpus = result["peak_rss_mib"], result["corpus"]
    lines = [
        "# Peak memory of `ekd-edge distill`",
        "",
        f"Command: `{result['command']}` (fresh run directory; measured by `benchmarks/distill_memory.py`)",
        "",
        table(["recipe", "train pairs", "tokenized pairs", "wall (s)", "peak RSS, wait4 (MiB)",
               "peak RSS, sampled (MiB)"],
              [[result["recipe"], corpus.get("train_pairs"), corpus.get("tokenized_pairs"), result["wall_s"],
                mib["wait4"], mib["sampled"]]],
              # wall time and MiB as recorded (one decimal)
              align="lrrrrr", formats={1: count, 2: count, 3: plain, 4: plain, 5: plain}),
        f"RSS sampled every {result['sample_interval_s']} s ({len(result['rss_series_mib'])} samples; "
        "series in result.json). wait4 gives the kernel's maximum resident set of the process; "
        "the sampled peak misses what happens between samples (and the two can differ by a fraction "
        "of a MiB: the kernel counts RSS per thread in batches).",
        "",
        provenance_footer(result["provenance"]),
    ]
    (out / "result.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="ekd_edge/recipes/demo.toml", help="recipe file or packaged recipe name")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/distill-memory"),
                        help="run directory, deleted first (relative paths are under the repository)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where result.json and result.md go")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    args = parser.parse_args()
    from ekd_edge.bench.provenance import Provenance
    from ekd_edge.distill.recipe import load_recipe

    # the commit and load before anything runs; threads as the recipe sets them for the child
    provenance = Provenance.begin(threads=load_recipe(args.recipe).training.threads or None,
                                  settings={"recipe": args.recipe, "sample_interval_s": args.interval})
    run_dir = args.run_dir if args.run_dir.is_absolute() else ROOT / args.run_dir
    fresh_run_dir(run_dir)

    shown = run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir
    command = [sys.executable, "-m", "ekd_edge", "distill", args.recipe, "--run-dir", str(run_dir)]
    status, peak_kib, wall, samples = run_measured(command, args.interval)
    if status != 0:
        print(f"distill failed with status {status}", file=sys.stderr)
        return 1

    corpus = corpus_sizes(args.recipe, run_dir)
    series = [[round(t, 1), round(kib / 1024, 1)] for t, kib in samples]
    result = {
        "command": f"ekd-edge distill {args.recipe} --run-dir {shown}",
        "recipe": args.recipe,
        "wall_s": round(wall, 1),
        "peak_rss_mib": {"wait4": round(peak_kib / 1024, 1),
                         "sampled": max((mib for _, mib in series), default=None)},
        "sample_interval_s": args.interval,
        "rss_series_mib": series,
        "corpus": corpus,
        "provenance": provenance.end(),
    }
    write_results(args.out, result)
    print(f"peak RSS {result['peak_rss_mib']['wait4']} MiB (sampled {result['peak_rss_mib']['sampled']} MiB), "
          f"{result['wall_s']} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
