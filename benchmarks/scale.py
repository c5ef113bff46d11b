"""Scale: `ekd-edge distill` on synthetic corpora of growing size, and what grows with the corpus.

    .venv/bin/python benchmarks/scale.py [--sizes 100000 1000000 4000000] [--steps 50]
        [--long-size 1000000 --long-steps 1000] [--work-dir /tmp/ekd-scale] [--out benchmarks/results/scale]

Corpora: each line joins two pairs of the bundled lo-help-en-de training split (source to source,
target to target), drawn at random without repeating a combination, so every size has distinct
lines of realistic text; valid and test are the bundled ones. They are written under --work-dir,
outside the repository, and never committed. 10M pairs (`--sizes 10000000`) is the same command,
a longer run (disk grows about linearly: corpus, stores and caches took 4.3 GB at 4M pairs).

Per size, one `distill` from scratch (fresh run and cache directories) of the shipped teachers
teacher-m → teacher-l, the student speaking their vocabulary: stage 1 word-level KD from a top-8
teacher cache, stage 2 sequence-level KD, each --steps steps, no baselines. Recorded from the run's
own records: tokenising rate (pairs/s, from the token store's build time), time to the first
training step (from launch; the teacher passes that step needs are reported apart), the pairs the
teacher was passed over in each stage against the pairs trained on, the peak resident set of every
process (the kernel's VmHWM, with anonymous and file-backed RSS sampled), disk used, and growth
exponents (slope of log metric on log corpus size: 0 is flat, 1 linear).

Then, on the --long-size corpus: a stage of --long-steps word-KD steps (teacher-s, sharded top-8
cache) is killed once two shards are written and rerun: the shards finished before the kill must be
kept (same files) and the teacher must pass over no more pairs than the stage trains on; finally one
line of the corpus is changed and the rerun must be refused (exit 2, no traceback).

Run it on a quiet machine: the tokenising rate and the times are wall-clock. The 0.1M/1M/4M sweep
takes about 25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
RESULTS = ROOT / "benchmarks" / "results" / "scale"
TEACHERS = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de"
CORPUS = ROOT / "ekd_edge" / "corpora" / "lo-help-en-de"


# ---------------------------------------------------------------------------------------- corpora
def bundled_split(split: str) -> tuple[list[str], list[str]]:
    sides = []
    for lang in ("en", "de"):
        path = next(p for p in (CORPUS / f"{split}.{lang}.xz", CORPUS / f"{split}.{lang}") if p.is_file())
        opener = lzma.open if path.suffix == ".xz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            sides.append(f.read().split("\n"))
    n = min(len(s) for s in sides)
    return sides[0][:n], sides[1][:n]


def make_corpus(folder: Path, pairs: int, seed: int = 1) -> dict:
    """``pairs`` lines, each two training pairs joined, no combination twice; valid/test copied."""
    done = folder / "corpus.json"
    if done.is_file() and json.loads(done.read_text())["pairs"] == pairs:
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    src, tgt = bundled_split("train")
    keep = [i for i in range(len(src)) if src[i].strip() and tgt[i].strip()]
    n = len(keep)
    if pairs > n * (n - 1):
        raise SystemExit(f"at most {n * (n - 1):,} distinct joined pairs from {n:,} training pairs")
    rng = np.random.default_rng(seed)
    # index i -> (first, second): first = i mod n, second a shift of it by a per-round offset, so no
    # combination repeats (first, round) -> distinct second; the order is shuffled afterwards
    order = rng.permutation(pairs)
    with open(folder / "train.en", "w", encoding="utf-8") as fs, open(folder / "train.de", "w", encoding="utf-8") as ft:
        for block in range(0, pairs, 65536):
            idx = order[block:block + 65536]
            first, rounds = idx % n, idx // n
            second = (first + 1 + rounds) % n
            fs.write("".join(f"{src[keep[a]]} {src[keep[b]]}\n" for a, b in zip(first, second)))
            ft.write("".join(f"{tgt[keep[a]]} {tgt[keep[b]]}\n" for a, b in zip(first, second)))
    for split in ("valid", "test"):
        s, t = bundled_split(split)
        (folder / f"{split}.en").write_text("\n".join(s))
        (folder / f"{split}.de").write_text("\n".join(t))
    record = {"pairs": pairs, "seed": seed, "bytes": sum(p.stat().st_size for p in folder.glob("train.*")),
              "made_from": f"{n:,} non-empty pairs of the bundled lo-help-en-de train split"}
    done.write_text(json.dumps(record, indent=2))
    return record


# ------------------------------------------------------------------------------------------ recipe
def recipe_text(corpus: Path, stages: str, steps: int, teachers: list[str], student: str = "tiny") -> str:
    teacher_tables = "".join(f'[[teacher]]\nname = "{t}"\ncheckpoint = "{TEACHERS / t}"\n' for t in teachers)
    return f'''name = "scale"
seed = 1
[data]
corpus = "{corpus}"
src_lang = "en"
tgt_lang = "de"
max_length = 128          # two joined lines: the demo's 64 would drop most of them
valid_sentences = 8       # evaluation after a stage is not what is measured
[tokenizer]
from = "{teachers[-1]}"   # the student speaks the shipped teachers' vocabulary: word-level KD works
[training]
batch_tokens = 2048
eval_max_new_tokens = 8
threads = 0               # every core
[distill]
teacher_engine = "auto"
{teacher_tables}[student]
size = "{student}"
steps_per_stage = {steps}
{stages}'''


LADDER_STAGES = '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n[[stage]]\nmethod = "seq_kd"\n'
LONG_STAGE = '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n'


# ----------------------------------------------------------------------------------- measurement
def _status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile", "PPid", "Name"):
            out[key] = value.split()[0] if key != "Name" else value.strip()
    return out


class TreeSampler(threading.Thread):
    """Every ``interval`` s: each process of the tree under ``root`` — its kernel peak (VmHWM) and
    its anonymous and file-backed resident sets. Per process: the largest of each seen (KiB)."""

    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peaks: dict[int, dict] = {}
        self.stop = threading.Event()

    def tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        mine, grown = {self.root}, True
        while grown:
            grown = False
            for pid, ppid in parents.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    grown = True
        return sorted(mine)

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.tree():
                try:
                    st = _status(pid)
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if "VmHWM" not in st:
                    continue
                peak = self.peaks.setdefault(pid, {"name": st["Name"], "command": cmd[:120], "hwm_kib": 0,
                                                   "anon_kib": 0, "file_kib": 0})
                for key, field in (("hwm_kib", "VmHWM"), ("anon_kib", "RssAnon"), ("file_kib", "RssFile")):
                    peak[key] = max(peak[key], int(st.get(field, 0)))
            self.stop.wait(self.interval)


def run_distill(recipe: Path, run_dir: Path, cache_dir: Path, log: Path, kill_when=None) -> dict:
    """One `ekd-edge distill` child: exit status, wall seconds, launch time, peak memory per process.
    ``kill_when()`` returning True (checked every 0.2 s) sends SIGKILL to the whole process group."""
    command = [sys.executable, "-m", "ekd_edge", "distill", str(recipe), "--run-dir", str(run_dir),
               "--cache-dir", str(cache_dir)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    launched = time.time()
    began = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        killed = False
        while proc.poll() is None:
            if kill_when is not None and not killed and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.2)
    sampler.stop.set()
    sampler.join()
    return {"status": proc.returncode, "killed": killed, "wall_s": round(time.perf_counter() - began, 1),
            "launched_at": launched, "processes": list(sampler.peaks.values())}


def disk_bytes(*folders: Path) -> int:
    return sum(p.stat().st_size for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file())


def newest_meta(cache_dir: Path, pattern: str) -> dict:
    """The meta.json of the largest store matching ``pattern`` (the training split's, not seq-KD's)."""
    metas = [json.loads(p.read_text()) for p in cache_dir.glob(f"{pattern}/meta.json")]
    return max(metas, key=lambda m: m["pairs"]) if metas else {}


def stage_record(run_dir: Path, k: int) -> dict:
    return json.loads((run_dir / "students" / f"stage-{k}" / "metrics.json").read_text())


def measure_size(pairs: int, args, work: Path) -> dict:
    corpus_dir = work / f"corpus-{pairs}"
    made = make_corpus(corpus_dir, pairs)
    run_dir, cache_dir = work / f"run-{pairs}", work / f"cache-{pairs}"
    for folder in (run_dir, cache_dir):
        shutil.rmtree(folder, ignore_errors=True)
    recipe = work / f"scale-{pairs}.toml"
    recipe.write_text(recipe_text(corpus_dir, LADDER_STAGES, args.steps, ["teacher-m", "teacher-l"], args.student))
    print(f"[scale] {pairs:,} pairs: distill {args.steps} + {args.steps} steps", flush=True)
    run = run_distill(recipe, run_dir, cache_dir, work / f"run-{pairs}.log")
    if run["status"] != 0:
        raise SystemExit(f"distill on {pairs:,} pairs failed ({run['status']}); see {work / f'run-{pairs}.log'}")
    text, tokens = newest_meta(cache_dir, "text-*"), newest_meta(cache_dir, "pairs-*")
    s1, s2 = stage_record(run_dir, 1), stage_record(run_dir, 2)
    cache1, seq2 = s1["stage_method"]["teacher_cache"], s2["stage_method"]["seqkd"]
    to_first = s1["first_step_at"] - run["launched_at"]
    peak = max(run["processes"], key=lambda p: p["hwm_kib"])
    row = {
        "pairs": pairs, "corpus_bytes": made["bytes"],
        "text_store": {"pairs": text["pairs"], "seconds": text["seconds"]},
        "tokenized": {"pairs": tokens["pairs"], "dropped_long": tokens["dropped_long"], "seconds": tokens["seconds"],
                      "pairs_per_s": round(text["pairs"] / tokens["seconds"], 1)},
        "first_step_s": round(to_first, 1),
        "stage1_teacher_s": cache1["teacher_s"],
        "first_step_without_teacher_s": round(to_first - cache1["teacher_s"], 1),
        "stage1": {"layout": cache1["layout"], "teacher_pairs": cache1["passed_now"],
                   "train_pairs": s1["train_pairs"], "steps": s1["steps"]},
        "stage2": {"decoded": seq2["decoded_now"], "sources": seq2["sources"], "engine": seq2["engine"],
                   "decode_s": seq2["decode_s"], "train_pairs": s2["train_pairs"], "steps": s2["steps"]},
        "peak_rss_mib": round(peak["hwm_kib"] / 1024, 1),
        "peak_anon_mib": round(max(p["anon_kib"] for p in run["processes"]) / 1024, 1),
        "peak_file_mib": round(max(p["file_kib"] for p in run["processes"]) / 1024, 1),
        "processes": [{**p, "hwm_mib": round(p["hwm_kib"] / 1024, 1)} for p in run["processes"]],
        "disk_bytes": {"corpus": made["bytes"], "cache": disk_bytes(cache_dir), "run": disk_bytes(run_dir)},
        "wall_s": run["wall_s"],
    }
    print(f"[scale] {pairs:,}: tokenising {row['tokenized']['pairs_per_s']:,.0f} pairs/s, first step "
          f"{row['first_step_s']} s ({row['stage1_teacher_s']} s teacher), peak RSS {row['peak_rss_mib']} MiB",
          flush=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)
    return row


def growth(rows: list[dict], value) -> float | None:
    """Least-squares slope of log(value) on log(pairs)."""
    points = [(math.log(r["pairs"]), math.log(v)) for r in rows if (v := value(r))]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points), 3)


def long_stage(args, work: Path) -> dict:
    """A --long-steps stage on the --long-size corpus: killed after two shards, rerun, then refused on a
    changed corpus."""
    pairs = args.long_size
    corpus_dir = work / f"corpus-{pairs}"
    make_corpus(corpus_dir, pairs)
    run_dir, cache_dir = work / f"long-{pairs}", work / f"long-cache-{pairs}"
    for folder in (run_dir, cache_dir):
        shutil.rmtree(folder, ignore_errors=True)
    recipe = work / f"long-{pairs}.toml"
    recipe.write_text(recipe_text(corpus_dir, LONG_STAGE, args.long_steps, ["teacher-s"], args.student))
    log = work / f"long-{pairs}.log"

    def shards() -> dict[str, float]:
        return {p.name: p.stat().st_mtime for d in cache_dir.glob("teacher-*-shards") for p in d.glob("shard-*")
                if (p / "tail.npy").is_file()}

    print(f"[scale] {pairs:,} pairs: a {args.long_steps}-step stage, killed after two shards", flush=True)
    first = run_distill(recipe, run_dir, cache_dir, log, kill_when=lambda: len(shards()) >= 2)
    before = shards()
    pairs_at_kill = sum(len(np.load(p / "pairs.npy")) for d in cache_dir.glob("teacher-*-shards")
                        for p in d.glob("shard-*") if p.name in before)
    second = run_distill(recipe, run_dir, cache_dir, log)
    if second["status"] != 0:
        raise SystemExit(f"the rerun after the kill failed ({second['status']}); see {log}")
    after = shards()
    record = stage_record(run_dir, 1)
    cache = record["stage_method"]["teacher_cache"]
    kept = all(after.get(name) == mtime for name, mtime in before.items())
    # a changed corpus: one character of the last training line, then the file restored
    train = corpus_dir / "train.en"
    original = train.read_bytes()
    train.write_bytes(original[:-2] + (b"X" if original[-2:-1] != b"X" else b"Y") + original[-1:])
    try:
        refused = subprocess.run([sys.executable, "-m", "ekd_edge", "distill", str(recipe), "--run-dir", str(run_dir),
                                  "--cache-dir", str(cache_dir)], cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, HF_HUB_OFFLINE="1"))
    finally:
        train.write_bytes(original)
    row = {
        "pairs": pairs, "steps": args.long_steps,
        "killed_run": {"killed": first["killed"], "wall_s": first["wall_s"], "shards_at_kill": sorted(before),
                       "pairs_in_those_shards": pairs_at_kill},
        "rerun": {"status": second["status"], "wall_s": second["wall_s"], "shards": len(after),
                  "shards_kept": kept, "teacher_pairs_rerun": cache["passed_now"]},
        "cached_pairs": cache["cached_pairs"], "train_pairs": record["train_pairs"],
        "teacher_pairs_total": cache["cached_pairs"],
        "teacher_within_trained": cache["cached_pairs"] <= record["train_pairs"],
        "changed_corpus": {"status": refused.returncode, "message": refused.stderr.strip().splitlines()[-1:],
                           "traceback": "Traceback" in refused.stderr},
    }
    print(f"[scale] long stage: teacher over {row['teacher_pairs_total']:,} pairs, trained on "
          f"{row['train_pairs']:,}; shards kept: {kept}; changed corpus: exit {refused.returncode}", flush=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)
    return row


# ------------------------------------------------------------------------------------------ report
def render(result: dict) -> str:
    from ekd_edge.markdown import count, number, plain, provenance_footer, table

    rows, g, st = result["sizes"], result["growth"], result["settings"]
    mib = lambda v: number(v, ".1f")  # noqa: E731
    lines = [
        "# Scale: `ekd-edge distill` on corpora of growing size",
        "",
        f"Synthetic corpora (two bundled lo-help-en-de training pairs joined per line, distinct combinations); "
        f"per size one `distill` from scratch: stage 1 word-level KD from teacher-m's top-8 cache, stage 2 "
        f"seq-KD from teacher-l, {st['steps']} steps each, student `{st['student']}`, every core. "
        "Measured by `benchmarks/scale.py`.",
        "",
        table(["pairs", "tokenising (pairs/s)", "to first step (s)", "of which teacher (s)",
               "teacher pairs, stage 1", "trained pairs, stage 1", "decoded, stage 2", "trained pairs, stage 2",
               "peak RSS (MiB)", "anon / file (MiB)", "disk (MB)"],
              [[r["pairs"], r["tokenized"]["pairs_per_s"], r["first_step_s"], r["stage1_teacher_s"],
                r["stage1"]["teacher_pairs"], r["stage1"]["train_pairs"], r["stage2"]["decoded"],
                r["stage2"]["train_pairs"], mib(r["peak_rss_mib"]),
                f"{r['peak_anon_mib']:.1f} / {r['peak_file_mib']:.1f}",
                number(sum(r["disk_bytes"].values()) / 1e6, ".0f")] for r in rows],
              align="rrrrrrrrrrr", formats={0: count, 1: lambda v: number(v, ",.0f"), 2: plain, 3: plain,
                                            4: count, 5: count, 6: count, 7: count}),
        "Peak RSS: the largest kernel VmHWM of any process of the run (anonymous and file-backed parts sampled "
        "every 0.25 s). To first step: from launching `distill` to the end of the first training step; "
        "teacher: the teacher passes that step needs (stage 1's shard for its steps), shown apart. Disk: "
        "corpus files, cache (text and token stores, teacher shards, seq-KD targets) and run directory.",
        "",
        "Growth exponents (slope of log value on log pairs; 0 = flat, 1 = linear): "
        + ", ".join(f"{name} {plain(v)}" for name, v in g.items()) + ".",
        "",
    ]
    if result.get("long_stage"):
        ls = result["long_stage"]
        lines += [
            f"## A {ls['steps']:,}-step stage on {ls['pairs']:,} pairs, killed and rerun",
            "",
            f"Killed (SIGKILL) once {len(ls['killed_run']['shards_at_kill'])} teacher shards were written, then rerun: "
            f"shards kept {'yes' if ls['rerun']['shards_kept'] else 'NO'}; the rerun passed the teacher over "
            f"{ls['rerun']['teacher_pairs_rerun']:,} more pairs. In all the teacher saw {ls['teacher_pairs_total']:,} "
            f"pairs and the stage trained on {ls['train_pairs']:,} "
            f"({'no more' if ls['teacher_within_trained'] else 'MORE'} than it trains on). With one character of the "
            f"corpus changed the rerun exited {ls['changed_corpus']['status']}"
            f"{' with a traceback' if ls['changed_corpus']['traceback'] else ''}: "
            f"`{' '.join(ls['changed_corpus']['message'])}`",
            "",
        ]
    lines.append(provenance_footer(result["provenance"]))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--steps", type=int, default=50, help="steps of each of the two stages")
    parser.add_argument("--long-size", type=int, default=1_000_000, help="corpus of the kill/rerun stage (0: skip it)")
    parser.add_argument("--long-steps", type=int, default=1000)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/ekd-scale"), help="corpora and runs (outside the repository)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep each run and cache directory")
    parser.add_argument("--smoke", action="store_true",
                        help="1,500 and 3,000 pairs, 2 steps, a 130-step stage on 3,000 pairs, nano student: a check")
    args = parser.parse_args()
    args.student = "tiny"
    if args.smoke:
        if args.out.resolve() == RESULTS:
            parser.error("--smoke writes no committed result: give --out")
        args.sizes, args.steps, args.long_size, args.long_steps, args.student = [1500, 3000], 2, 3000, 130, "nano"
    work = args.work_dir.resolve()
    if work.is_relative_to(ROOT):
        parser.error("--work-dir must be outside the repository: the corpora are never committed")
    work.mkdir(parents=True, exist_ok=True)
    from ekd_edge.bench.provenance import Provenance, write_result

    provenance = Provenance.begin(threads=os.cpu_count(), settings={
        "sizes": args.sizes, "steps": args.steps, "long_size": args.long_size, "long_steps": args.long_steps,
        "student": args.student, "teachers": ["teacher-m (stage 1, top-8 cache)", "teacher-l (stage 2, seq-KD)"],
        "batch_tokens": 2048, "max_length": 128})
    rows = [measure_size(n, args, work) for n in sorted(args.sizes)]
    result = {
        "sizes": rows,
        "growth": {
            "peak RSS": growth(rows, lambda r: r["peak_rss_mib"]),
            "peak anonymous RSS": growth(rows, lambda r: r["peak_anon_mib"]),
            "time to first step without teacher": growth(rows, lambda r: r["first_step_without_teacher_s"]),
            "tokenising time": growth(rows, lambda r: r["tokenized"]["seconds"]),
            "teacher pairs, stage 1": growth(rows, lambda r: r["stage1"]["teacher_pairs"]),
            "disk": growth(rows, lambda r: sum(r["disk_bytes"].values())),
        },
        "long_stage": long_stage(args, work) if args.long_size else None,
        "settings": {"steps": args.steps, "student": args.student},
    }
    result["provenance"] = provenance.end(data={"corpus": "synthetic from lo-help-en-de train (not committed)"})
    md = write_result(args.out, result, render(result))
    print(f"[scale] wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
