"""Token-level agreement of the demo's exported bundles on aarch64 (onnxruntime's aarch64 build under qemu) with x86.

    python benchmarks/arm_agreement.py                       # the demo student's bundles, test split
    python benchmarks/arm_agreement.py --build-root          # build the cached aarch64 root first
    python benchmarks/arm_agreement.py --bundle DIR …        # other bundles (the first is the headline)
    python benchmarks/arm_agreement.py --avx2-sentences 200  # also an AVX2-only x86 core (qemu Haswell)

By default these bundles are compared, in this order: the Android app's one-file model (int8,
portable numerics: the headline), then the demo's final student (the last stage of runs/demo)
exported with the arm64 profile (optimum layout, portable numerics) and with the cpu-x86 profile
(the same layout with fast numerics: expected to differ), both exported here if missing.
The optimum-layout bundles run one greedy loop with plain onnxruntime sessions
(ekd_edge/bench/ort_greedy.py) on token ids tokenised once on the host; one-file models run
ekd_edge/bench/ort_onefile.py on the texts. Each session uses the optimisation level its
bundle's manifest asks for. The aarch64 side runs the onnxruntime and onnxruntime-extensions
versions the Android app pins (ekd_edge/bench/arm.py); the x86 side runs this environment's.
With --avx2-sentences N the first N sentences also run on x86 under ``qemu-x86_64 -cpu Haswell``
(AVX2/FMA, no AVX-512, no VNNI: the int8 kernels of x86 CPUs without VNNI), compared with the
native x86 run. Writes benchmarks/results/arm/result.json and result.md. Latency under qemu is
reported separately and labelled as emulated: it is not the speed of any device. Exit status 1
when the first bundle agrees on fewer than 99 % of sentences (on either comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ekd_edge.bench.arm import (AVX2_CPU, DEFAULT_ROOT, EMULATED_LABEL, ArmRoot, X86Python, agreement,  # noqa: E402
                                greedy_ids)
from ekd_edge.files import write_bytes_atomic as atomic_write  # noqa: E402
from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.bench.speed import latency_summary  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data.corpus import load_corpus  # noqa: E402
from ekd_edge.data.tokenizer import load_tokenizer  # noqa: E402
from ekd_edge.defaults import DEMO_RUN_DIR  # noqa: E402
from ekd_edge.markdown import provenance_footer, table  # noqa: E402


def default_bundles(run_dir: Path) -> list[Path]:
    """The Android app's model, then the demo's final student exported with the arm64 profile
    (optimum layout, portable numerics) and with cpu-x86 (the same layout, fast numerics),
    exported if missing. onefile-x86's block-wise int8 is not among them: the app's onnxruntime
    1.22 has no 8-bit MatMulNBits kernel on aarch64 (only 4-bit)."""
    from ekd_edge.export.profiles import load_profile, run_export
    from ekd_edge.pipeline import final_student

    student = final_student(run_dir)
    bundles = [REPO / "android_demo/app/src/main/assets/model"]
    for profile in ("arm64", "cpu-x86"):
        out = run_dir / "exports" / f"{student.name}-{profile}"
        if not (out / "manifest.json").is_file():
            with console.status(f"exporting {out.name} with the {profile} profile"):
                run_export(student, out, load_profile(profile))
        bundles.append(out)
    return bundles


def measure(root: ArmRoot, bundle: Path, texts: list[str], avx2_sentences: int = 0) -> dict:
    """Both sides on one bundle: token agreement and per-sentence latency (and, for the first
    ``avx2_sentences``, the agreement of an emulated AVX2-only x86 core with the native run)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    settings = manifest.get("settings", {})
    if manifest.get("backend") == "onefile":
        inputs = texts   # the model tokenises them itself
    else:   # tokenised once on the host, so both sides see the same ids
        tokenizer = load_tokenizer(bundle)
        inputs = [tokenizer(s, truncation=True, max_length=256)["input_ids"] for s in texts]
    with console.status(f"{bundle.name}: x86, {len(texts)} sentences"):
        start = time.perf_counter()
        native = greedy_ids(None, bundle, inputs)
        native_wall = time.perf_counter() - start
    with console.status(f"{bundle.name}: aarch64 under qemu, {len(texts)} sentences"):
        start = time.perf_counter()
        emulated = greedy_ids(root, bundle, inputs)
        emulated_wall = time.perf_counter() - start
    avx2 = None
    if avx2_sentences:
        n = min(avx2_sentences, len(texts))
        with console.status(f"{bundle.name}: x86 {AVX2_CPU} under qemu, {n} sentences"):
            start = time.perf_counter()
            run = greedy_ids(X86Python(cpu=AVX2_CPU), bundle, inputs[:n])
            avx2 = {"cpu": f"qemu-x86_64 -cpu {AVX2_CPU} (AVX2/FMA, no AVX-512, no VNNI)",
                    "onnxruntime": run["onnxruntime"], "agreement": agreement(native["ids"][:n], run["ids"]),
                    "latency_label": EMULATED_LABEL, "latency_ms_emulated": latency_summary(run["seconds"]),
                    "wall_s": time.perf_counter() - start}
    return {
        "bundle": str(bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle),
        "variant": manifest.get("variant"), "arch": settings.get("arch"),
        "runner": "ort_onefile.py" if manifest.get("backend") == "onefile" else "ort_greedy.py",
        "numerics": settings.get("numerics", "fast"),
        "graph_optimization_level": native["graph_optimization_level"],
        "size_bytes": manifest.get("total_size"),
        "agreement": agreement(native["ids"], emulated["ids"]),
        "x86": {"machine": native["machine"], "onnxruntime": native["onnxruntime"],
                "latency_ms": latency_summary(native["seconds"]), "wall_s": native_wall},
        "aarch64": {"machine": emulated["machine"], "python": emulated["python"],
                    "onnxruntime": emulated["onnxruntime"], "latency_label": EMULATED_LABEL,
                    "latency_ms_emulated": latency_summary(emulated["seconds"]), "wall_s": emulated_wall},
        "x86_avx2": avx2,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", help="bundle to compare (repeatable)")
    parser.add_argument("--run-dir", type=Path, default=REPO / DEMO_RUN_DIR)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--build-root", action="store_true")
    parser.add_argument("--corpus", default="lo-help-en-de")
    parser.add_argument("--max-sentences", type=int, default=0, help="0 = the whole test split")
    parser.add_argument("--avx2-sentences", type=int, default=0,
                        help="also run the first N sentences on an emulated AVX2-only x86 core (slow: 1-3 s each)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/arm")
    args = parser.parse_args()
    provenance = Provenance.begin(threads=1, settings={"corpus": args.corpus, "max_sentences": args.max_sentences,
                                                       "avx2_sentences": args.avx2_sentences})

    root = ArmRoot(args.root)
    if args.build_root:
        root.build(say=console.print)
    bundles = args.bundle or default_bundles(args.run_dir)
    test = load_corpus(args.corpus).split("test")
    src = test.src[: args.max_sentences or None]
    if root.has_base():
        root.build(say=console.print)   # kept as is; a root with other wheels gets the app's versions
    runtime = root.versions()
    runs = [measure(root, bundle, src, args.avx2_sentences) for bundle in bundles]
    command = "python benchmarks/arm_agreement.py" + "".join(f" --bundle {r['bundle']}" for r in runs if args.bundle) \
        + (f" --max-sentences {args.max_sentences}" if args.max_sentences else "") \
        + (f" --avx2-sentences {args.avx2_sentences}" if args.avx2_sentences else "")
    result = {
        "command": command,
        "data": f"{args.corpus}:test ({len(src)} sentences, fingerprint {test.fingerprint()})",
        "decoding": "greedy, batch 1, max_new_tokens 128, 1 thread, plain onnxruntime sessions: ort_greedy.py "
                    "(optimum layout, ids tokenised on the host) or ort_onefile.py (one-file models, text in)",
        "emulated_cpu": root.cpu,
        "aarch64_root": "Debian bookworm arm64 (debootstrap)",
        "aarch64_runtime": runtime,
        "qemu": subprocess.run([root.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "runs": runs,
    }
    result["provenance"] = provenance.end(data={"test": test.fingerprint()}, models=bundles)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "result.json", (json.dumps(result, indent=2) + "\n").encode())
    md = render(result, args.avx2_sentences > 0)
    atomic_write(args.out / "result.md", md.encode())
    console.print(md, markup=False)
    headline = [runs[0]["agreement"]["rate"]] + ([runs[0]["x86_avx2"]["agreement"]["rate"]] if args.avx2_sentences else [])
    return 0 if min(headline) >= 0.99 else 1


def render(result: dict, avx2: bool) -> str:
    def agreed(agree: dict) -> str:
        return f"**{agree['identical']}/{agree['n']} ({100 * agree['rate']:.2f} %)**"

    runs, runtime = result["runs"], result["aarch64_runtime"]
    body = []
    for r in runs:
        x, a = r["x86"]["latency_ms"], r["aarch64"]["latency_ms_emulated"]
        body.append([f"`{r['bundle']}`", f"{r['variant']} ({r['arch'] or '-'})",
                     f"{r['numerics']} ({r['graph_optimization_level'].rsplit('.', 1)[-1]})", r["size_bytes"] / 1e6,
                     agreed(r["agreement"]), f"{x['p50_ms']:.1f} / {x['p90_ms']:.1f}",
                     f"{a['p50_ms']:.1f} / {a['p90_ms']:.1f}"])
    md = ["# aarch64 vs x86: token agreement of the demo student's bundles", "",
          f"Command: `{result['command']}`  ", f"Data: {result['data']}  ", f"Decoding: {result['decoding']}", "",
          table(["bundle", "variant", "numerics (ORT optimisation level)", "size MB", "identical token ids",
                 "x86 p50 / p90 ms", f"aarch64 p50 / p90 ms, {EMULATED_LABEL}"], body, align="lllrrrr")]
    if avx2:
        md += [f"x86 without VNNI: the same bundles on `qemu-x86_64 -cpu {AVX2_CPU}` (AVX2/FMA, no AVX-512, "
               "no VNNI; onnxruntime picks its int8 kernels by CPUID), against the native x86 run above:", "",
               table(["bundle", "identical token ids, AVX2 (emulated) vs native x86"],
                     [[f"`{r['bundle']}`", agreed(r["x86_avx2"]["agreement"])] for r in runs], align="lr")]
    md += ["Latencies are of one thread, batch 1, sentence by sentence; x86 figures are native, aarch64 "
           "figures are of an emulator on the x86 host and say nothing about an ARM device.", "",
           f"Runtimes: onnxruntime {runs[0]['x86']['onnxruntime']} (x86) and {runs[0]['aarch64']['onnxruntime']} "
           f"(aarch64 wheel, onnxruntime-extensions {runtime['onnxruntime_extensions']}: the Android app's versions); "
           f"{result['qemu']}, `-cpu {result['emulated_cpu']}`.", "",
           provenance_footer(result["provenance"])]
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
