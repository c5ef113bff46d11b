"""Token-level agreement of an int8 bundle on aarch64 (onnxruntime's aarch64 build under qemu) with x86.

    python benchmarks/arm_agreement.py                       # the demo's stage-2 int8 bundle, test split
    python benchmarks/arm_agreement.py --build-root          # build the cached aarch64 root first

Both sides run the same greedy loop (ekd_edge/bench/ort_greedy.py: plain onnxruntime sessions)
on the same token ids, tokenised once on the host. Writes benchmarks/results/arm/result.json and
result.md. Latency under qemu is reported separately and labelled as emulated: it is not the
speed of any ARM device.
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

from ekd_edge.bench.arm import DEFAULT_ROOT, EMULATED_LABEL, ArmRoot, agreement, greedy_ids  # noqa: E402
from ekd_edge.bench.report import atomic_write  # noqa: E402
from ekd_edge.bench.signature import environment_signature  # noqa: E402
from ekd_edge.bench.speed import latency_summary  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data.corpus import load_corpus  # noqa: E402
from ekd_edge.data.tokenizer import load_tokenizer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "runs/demo-bench/exports/stage-2-int8")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--build-root", action="store_true")
    parser.add_argument("--corpus", default="lo-help-en-de")
    parser.add_argument("--max-sentences", type=int, default=0, help="0 = the whole test split")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/arm")
    args = parser.parse_args()

    root = ArmRoot(args.root)
    if args.build_root:
        root.build(say=console.print)
    test = load_corpus(args.corpus).split("test")
    src = test.src[: args.max_sentences or None]
    tokenizer = load_tokenizer(args.bundle)
    id_lists = [tokenizer(s, truncation=True, max_length=256)["input_ids"] for s in src]

    with console.status(f"x86: {len(src)} sentences"):
        start = time.perf_counter()
        native = greedy_ids(None, args.bundle, id_lists)
        native_wall = time.perf_counter() - start
    with console.status(f"aarch64 under qemu: {len(src)} sentences"):
        start = time.perf_counter()
        emulated = greedy_ids(root, args.bundle, id_lists)
        emulated_wall = time.perf_counter() - start
    agree = agreement(native["ids"], emulated["ids"])
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": "python benchmarks/arm_agreement.py" + (f" --max-sentences {args.max_sentences}"
                                                           if args.max_sentences else ""),
        "bundle": str(args.bundle.relative_to(REPO) if args.bundle.is_relative_to(REPO) else args.bundle),
        "data": f"{args.corpus}:test ({len(src)} sentences, fingerprint {test.fingerprint()})",
        "decoding": "greedy, batch 1, max_new_tokens 128, plain onnxruntime sessions (ort_greedy.py), 1 thread",
        "emulated_cpu": root.cpu,
        "agreement": {k: v for k, v in agree.items()},
        "x86": {"machine": native["machine"], "onnxruntime": native["onnxruntime"],
                "latency_ms": latency_summary(native["seconds"]), "wall_s": native_wall},
        "aarch64": {"machine": emulated["machine"], "python": emulated["python"],
                    "onnxruntime": emulated["onnxruntime"], "root": "Debian bookworm arm64 (debootstrap)",
                    "latency_label": EMULATED_LABEL,
                    "latency_ms_emulated": latency_summary(emulated["seconds"]), "wall_s": emulated_wall,
                    "qemu": subprocess.run([root.qemu, "--version"], capture_output=True, text=True)
                    .stdout.splitlines()[0]},
        "host": environment_signature(1),
        "host_load": load,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "result.json", (json.dumps(result, indent=2) + "\n").encode())
    x, a = result["x86"]["latency_ms"], result["aarch64"]["latency_ms_emulated"]
    md = [
        f"# aarch64 vs x86: token agreement of `{args.bundle.name}`", "",
        f"Command: `{result['command']}`  ", f"Bundle: `{result['bundle']}`  ", f"Data: {result['data']}  ",
        f"Decoding: {result['decoding']}", "",
        f"**Identical token ids on {agree['identical']} of {agree['n']} sentences "
        f"({100 * agree['rate']:.2f} %).**", "",
        "| side | onnxruntime | p50 ms | p90 ms | p99 ms |", "| --- | --- | ---: | ---: | ---: |",
        f"| x86 (native) | {native['onnxruntime']} | {x['p50_ms']:.1f} | {x['p90_ms']:.1f} | {x['p99_ms']:.1f} |",
        f"| aarch64, {EMULATED_LABEL} | {emulated['onnxruntime']} | {a['p50_ms']:.1f} | {a['p90_ms']:.1f} "
        f"| {a['p99_ms']:.1f} |", "",
        f"Host: {result['host']['cpu']}, {result['host']['usable_cores']} usable cores; {result['aarch64']['qemu']}, `-cpu {root.cpu}`; "
        f"load at the end: `{load}`.", "",
    ]
    atomic_write(args.out / "result.md", "\n".join(md).encode())
    console.print("\n".join(md[6:8]))
    return 0 if agree["rate"] >= 0.99 else 1


if __name__ == "__main__":
    raise SystemExit(main())
