"""Every distillation method on a GPU, against the same runs on the CPU: does it work, how fast.

    .venv/bin/python benchmarks/gpu_smoke.py [--devices cuda,cpu] [--steps 40] [--work runs/gpu-smoke]

Short two-stage ladders over the shipped teachers (teacher-s → teacher-m), one per pair of
methods, so that every method runs at least once on each device:

    online-seqkd        stage 1 word-level KD, online teacher · stage 2 seq-KD (beam 2)
    cached-speculative  stage 1 word-level KD from a top-8 cache · stage 2 speculative KD
    copyinit            stage 1 copy-init from teacher-s (the student has its width) · stage 2 word KD
    foreign-bridged     teacher-m in the OPUS-MT layout (benchmarks/external_teacher.py): seq-KD with
                        the run's own tokenizer, then the same teacher through a trimmed vocabulary

plus pruning with recovery training (`export --prune`'s step) on the last student. Each device's
runs go through `ekd-edge distill` with EKD_EDGE_DEVICE set, in a fresh process (precision
"auto": bf16 on CUDA). The result records, per run and stage, target tokens/s and wall time, and
the ratio GPU / CPU. It fails loudly: any method that crashes on a device is recorded with its
last log line and the exit status is 1.

Writes benchmarks/results/gpu-smoke/: result.json, result.md.
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
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "gpu-smoke"
TEACHERS = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de"

HEAD = """
name = "gpu-smoke-{name}"
seed = 1
[data]
corpus = "lo-help-en-de"
max_train_pairs = 2000
max_length = 64
valid_sentences = 50
[tokenizer]
{tokenizer}
[training]
batch_tokens = 4096
warmup_steps = 10
eval_max_new_tokens = 64
checkpoint_every = 0
[student]
size = {student}
steps_per_stage = {steps}
"""
TEACHER = '[[teacher]]\nname = "{name}"\ncheckpoint = "{path}"\n'
LADDERS = {
    "online-seqkd": ('from = "teacher-s"', "tiny", ["teacher-s", "teacher-m"],
                     '[[stage]]\nmethod = "word_kd"\n[[stage]]\nmethod = "seq_kd"\nseqkd_beams = 2\n'),
    "cached-speculative": ('from = "teacher-s"', "tiny", ["teacher-s", "teacher-m"],
                           '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n[[stage]]\nmethod = "speculative"\n'),
    "copyinit": ('from = "teacher-s"', None, ["teacher-s", "teacher-m"],
                 '[[stage]]\nmethod = "word_kd"\ninit = "copy:first"\n[[stage]]\nmethod = "word_kd"\n'),
    "foreign": ("vocab_size = 4000", "tiny", ["opus"], '[[stage]]\nmethod = "auto"\nseqkd_beams = 2\n'),
    "bridged": ('from = "opus"\ntrim = true', "tiny", ["opus"], '[[stage]]\nmethod = "auto"\n'),
}


def recipe_text(name: str, steps: int, opus: Path) -> str:
    tokenizer, student, teachers, stages = LADDERS[name]
    if student is None:   # copy-init: as wide as teacher-s, half its depth
        config = json.loads((TEACHERS / "teacher-s" / "config.json").read_text())
        student = ("{d_model = %d, encoder_layers = 1, decoder_layers = 1, attention_heads = %d, ffn_dim = %d}"
                   % (config["d_model"], config["encoder_attention_heads"], config["encoder_ffn_dim"]))
    else:
        student = f'"{student}"'
    paths = {"teacher-s": TEACHERS / "teacher-s", "teacher-m": TEACHERS / "teacher-m", "opus": opus}
    body = "".join(TEACHER.format(name=t, path=paths[t]) for t in teachers)
    return HEAD.format(name=name, tokenizer=tokenizer, student=student, steps=steps) + body + stages


def run_ladder(name: str, device: str, steps: int, work: Path, opus: Path) -> dict:
    run_dir = work / device / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    recipe = run_dir.with_suffix(".toml")
    recipe.write_text(recipe_text(name, steps, opus))
    log = run_dir.with_suffix(".log")
    env = {**os.environ, "EKD_EDGE_DEVICE": device}
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run([sys.executable, "-m", "ekd_edge", "distill", str(recipe), "--run-dir", str(run_dir)],
                              cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return {"ok": False, "exit": proc.returncode, "wall_s": wall, "last_line": lines[-1] if lines else ""}
    stages = {}
    for stage in sorted((run_dir / "students").iterdir()):
        m = json.loads((stage / "metrics.json").read_text())
        stages[stage.name] = {"method": m["stage_method"]["method"], "kind": m["stage_method"].get("teacher_kind"),
                              "tokens_per_s": m["train_tokens_per_s"], "train_wall_s": m["wall_s"],
                              "valid_bleu": m["valid"]["bleu"]}
    return {"ok": True, "wall_s": wall, "stages": stages, "run_dir": str(run_dir)}


def prune_recovery(student: Path, device: str, out: Path) -> dict:
    """export --prune's pruning and recovery training, on ``device``."""
    env = {**os.environ, "EKD_EDGE_DEVICE": device}
    code = ("import sys, time, json\n"
            "from ekd_edge.data import load_corpus\n"
            "from ekd_edge.export.prune import PruneSettings, prune_checkpoint\n"
            "corpus = load_corpus('lo-help-en-de')\n"
            "t = time.perf_counter()\n"
            "prune_checkpoint(sys.argv[1], sys.argv[2], PruneSettings(ffn_keep=0.5, recovery_steps=30, "
            "importance_sentences=50), corpus.split('valid').head(50), corpus.split('train').head(2000))\n"
            "print(json.dumps({'wall_s': round(time.perf_counter() - t, 1)}))")
    proc = subprocess.run([sys.executable, "-c", code, str(student), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"ok": False, "last_line": (proc.stderr.strip().splitlines() or [""])[-1]}
    return {"ok": True, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-smoke")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    from ekd_edge.bench.provenance import Provenance
    from ekd_edge.markdown import plain, provenance_footer, table
    from external_teacher import write_opus_layout

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    provenance = Provenance.begin(settings={"devices": devices, "steps_per_stage": args.steps})
    work = args.work.resolve()
    opus = work / "opus-mt-lo-help-en-de"
    write_opus_layout(TEACHERS / "teacher-m", opus)
    results: dict = {}
    for device in devices:
        results[device] = {name: run_ladder(name, device, args.steps, work, opus) for name in LADDERS}
        last = results[device]["online-seqkd"]
        if last["ok"]:
            results[device]["prune-recovery"] = prune_recovery(Path(last["run_dir"]) / "students" / "stage-2", device,
                                                               work / device / "pruned")
    ratios = {}
    if len(devices) == 2:
        a, b = devices
        for name in LADDERS:
            ra, rb = results[a][name], results[b][name]
            if ra["ok"] and rb["ok"]:
                ratios[name] = {s: round(ra["stages"][s]["tokens_per_s"] / max(1e-9, rb["stages"][s]["tokens_per_s"]), 2)
                                for s in ra["stages"]}
    out = {"command": ".venv/bin/python benchmarks/gpu_smoke.py " + " ".join(sys.argv[1:]),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "results": results, f"tokens_per_s_ratio_{'_over_'.join(devices)}": ratios}
    out["provenance"] = provenance.end()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(out, indent=2))
    rows, failed = [], False
    for name in LADDERS:
        first = next((results[d][name] for d in devices if results[d][name]["ok"]), None)
        for d in devices:
            if not results[d][name]["ok"]:
                failed = True
                rows.append([name, None, f"FAILED on {d}: {results[d][name]['last_line']}", *[None] * len(devices)])
        if first is None:
            continue
        for stage, info in first["stages"].items():
            rows.append([name, stage, f"{info['method']} ({info['kind']})",
                         *[results[d][name]["stages"][stage]["tokens_per_s"] if results[d][name]["ok"] else "failed"
                           for d in devices]])
    lines = ["# gpu-smoke: every method on each device", "", f"Command: `{out['command']}`; GPU: {out['gpu']}; "
             f"torch {out['torch']}", "",
             table(["ladder", "stage", "method (teacher kind)", *(f"{d} tokens/s" for d in devices)], rows,
                   align="lll" + "r" * len(devices), formats={3 + i: plain for i in range(len(devices))})]
    for d in devices:
        pr = results[d].get("prune-recovery")
        if pr is not None:
            failed |= not pr["ok"]
            done = f"{pr['wall_s']} s" if pr["ok"] else f"FAILED: {pr['last_line']}"
            lines += [f"Pruning + 30 recovery steps on {d}: {done}", ""]
    lines.append(provenance_footer(out["provenance"]))
    (args.out / "result.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
