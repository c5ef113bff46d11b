"""Peak memory and load time of a model, measured in a fresh process.

Run as ``python -m ekd_edge.bench.probe MODEL_PATH --src FILE --n N --threads T``: it loads the
model with ``load_translator``, translates the first N lines of FILE one at a time and prints a
single JSON line. A separate process is the only honest way: in the benchmarking process other
models, the corpus and the libraries already loaded would all count towards the peak.

Why not ``getrusage(RUSAGE_SELF).ru_maxrss`` alone: on Linux, a process started with fork/vfork
+ exec inherits in ``ru_maxrss`` the high-water mark of the parent's memory at exec time, so a
probe started from a 2 GiB parent reports at least 2 GiB. ``VmHWM`` in ``/proc/self/status`` is
the peak of the new process image only; it is used where it exists, ``ru_maxrss`` elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ekd_edge.errors import EkdError, ProbeError


def peak_rss_mib() -> tuple[float, str]:
    """Peak resident set size of this process in MiB, and where the number came from."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM"
    except OSError:
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux but in bytes on macOS
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return maxrss / divisor, "ru_maxrss"


def run_probe(path: str, src: str, n: int | None, threads: int | None, max_new_tokens: int) -> dict:
    from ekd_edge.data.corpus import read_lines
    from ekd_edge.runtime import load_translator

    lines = read_lines(src)
    if n is not None:
        lines = lines[:n]
    start = time.perf_counter()
    # cold-process load: includes importing the engine's runtime libraries, as an app start would
    translator = load_translator(path, threads=threads)
    load_s = time.perf_counter() - start
    after_load_mib, _ = peak_rss_mib()
    for line in lines:
        translator.translate([line], batch_size=1, max_new_tokens=max_new_tokens)
    peak_mib, source = peak_rss_mib()
    return {
        "peak_rss_mb": peak_mib,
        "peak_rss_after_load_mb": after_load_mib,
        "rss_source": source,
        "load_s": load_s,
        "n_sentences": len(lines),
        "engine": translator.engine,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ekd_edge.bench.probe", description=__doc__.split("\n")[0])
    parser.add_argument("model_path", help="checkpoint directory or exported bundle directory")
    parser.add_argument("--src", required=True, help="source sentences, one per line (.xz accepted)")
    parser.add_argument("--n", type=int, default=None, help="translate only the first N lines")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the engine's)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        result = run_probe(args.model_path, args.src, args.n, args.threads, args.max_new_tokens)
    except EkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


def measure_peak_rss(path: str | Path, texts: list[str], threads: int | None = None, *,
                     max_new_tokens: int = 128, timeout: float | None = None) -> dict:
    """Run the probe on ``texts`` in a fresh interpreter; returns its JSON (``peak_rss_mb``, ``load_s``, ...)."""
    texts = list(texts)
    with tempfile.TemporaryDirectory(prefix="ekd-probe-") as tmp:
        src = Path(tmp) / "src.txt"
        # one sentence per line: a line break inside a sentence would split it in two
        src.write_text("".join(t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts), encoding="utf-8")
        cmd = [sys.executable, "-m", "ekd_edge.bench.probe", str(path), "--src", str(src), "--n", str(len(texts)),
               "--max-new-tokens", str(max_new_tokens)]
        if threads:
            cmd += ["--threads", str(threads)]
        env = dict(os.environ)
        # the child must import this very ekd_edge even when it is run from a source tree, not installed
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"memory probe for {path} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else "no error output"
        if last.startswith("error: "):
            last = last[len("error: "):]
        raise ProbeError(f"memory probe for {path} failed (exit {proc.returncode}): {last}")
    # libraries may print to stdout too: the result is the last line that parses as the probe's JSON
    for line in reversed(proc.stdout.splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "peak_rss_mb" in result:
            return result
    raise ProbeError(f"memory probe for {path} printed no result (stdout: {proc.stdout.strip()[-200:]!r})")


if __name__ == "__main__":
    raise SystemExit(main())


# Bundles an app runs without Python's ML stack, and the standalone script that runs them so.
APP_RUNNERS = {"onnxruntime-onefile": "ort_onefile.py", "ctranslate2": "ct2_app.py"}


def measure_app_footprint(path: str | Path, engine: str, texts: list[str], threads: int | None = None, *,
                          max_new_tokens: int = 128, timeout: float | None = None,
                          session_preset: str = "default") -> dict | None:
    """Memory and load time of a bundle in a process holding only its runtime (None for other engines).

    The one-file model runs with numpy + onnxruntime + the extensions' native library (what the
    Android app loads), a CTranslate2 bundle with ctranslate2 + sentencepiece. Returns the script's
    "memory" record (idle, loaded and peak resident set; model_mb = peak - idle) plus ``load_s``.
    ``session_preset`` (one-file only) is ort_onefile.py's SESSION_PRESETS.
    """
    script = APP_RUNNERS.get(engine)
    if script is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ekd-app-probe-") as tmp:
        texts_file, out_file = Path(tmp) / "texts.json", Path(tmp) / "out.json"
        texts_file.write_text(json.dumps(list(texts), ensure_ascii=False), encoding="utf-8")
        # the script runs in the temporary folder: a relative bundle path must not be read from there
        cmd = [sys.executable, str(Path(__file__).with_name(script)), str(Path(path).resolve()), str(texts_file),
               str(out_file),
               str(threads or 0), str(max_new_tokens)]
        if session_preset != "default":
            cmd += ["1", session_preset]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"app-runtime probe for {path} did not finish within {timeout} s") from None
        if proc.returncode != 0 or not out_file.is_file():
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            raise ProbeError(f"app-runtime probe for {path} failed (exit {proc.returncode}): "
                             f"{lines[-1] if lines else 'no error output'}")
        result = json.loads(out_file.read_text(encoding="utf-8"))
    return {**result["memory"], "load_s": result["load_s"], "runner": script, "translations": result["translations"]}
