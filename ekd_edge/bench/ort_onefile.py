"""Run a one-file bundle (strings in, strings out) sentence by sentence, as the Android app does:
numpy, onnxruntime and the onnxruntime-extensions native library only.

Like ort_greedy.py this file runs on its own (``python ort_onefile.py BUNDLE TEXTS.json OUT.json
[THREADS] [MAX_NEW_TOKENS] [NUM_BEAMS]``), inside the aarch64 root under qemu or on a device,
and imports nothing from this package. The session is configured as the bundle's manifest asks
(its graph optimisation level: "basic" for portable numerics), optionally with a SESSION_PRESET
("lean-memory": the memory-saving session settings below). Output: JSON with the token ids
and translation of every text, the seconds each took, and the process's memory as an app pays
it ("memory": resident set once the runtime is imported, after loading the model, and at its
peak while translating; Linux /proc figures).

The extensions' library is registered by path, as the app's Kotlin code does: importing the
Python package onnxruntime_extensions would pull in torch and transformers where they are
installed, and their hundreds of MB would be counted as the model's.
"""

import glob
import json
import os
import platform
import sys
import time


def memory_mib():
    """(current resident set, peak resident set) of this process in MiB; (None, None) off Linux."""
    values = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return values.get("VmRSS"), values.get("VmHWM")


def resident_kinds_mib():
    """This process's resident set split into heap and other private memory ("anon") and pages of
    mapped files, the runtime's code among them ("file"), in MiB; {} off Linux."""
    values = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssFile:")):
                    values[line[3:7].lower()] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return values


def memory_record(idle_mb, loaded_mb, idle_kinds=None, python_mb=None, numpy_mb=0.0):
    """The memory a standalone runner reports: resident set idle, loaded, at its peak (now), and
    the anon/file split idle and at the end. ``python_mb`` is the interpreter alone (before any
    import) and ``numpy_mb`` what importing numpy added: the onnxruntime Python package needs
    numpy, an app does not, so ``beyond_python_mb`` (peak less both) is the runtime's and the
    model's share, comparable between runtimes."""
    _, peak_mb = memory_mib()
    known = peak_mb is not None and python_mb is not None and numpy_mb is not None
    return {"idle_rss_mb": idle_mb, "loaded_rss_mb": loaded_mb, "peak_rss_mb": peak_mb,
            "model_mb": peak_mb - idle_mb if peak_mb is not None and idle_mb is not None else None,
            "python_rss_mb": python_mb, "numpy_mb": numpy_mb,
            "beyond_python_mb": peak_mb - python_mb - numpy_mb if known else None,
            "idle_kinds_mb": idle_kinds, "end_kinds_mb": resident_kinds_mib(),
            "source": "/proc/self/status VmRSS (idle, loaded), VmHWM (peak), RssAnon/RssFile (kinds)",
            "torch_imported": "torch" in sys.modules}


def runner_args(argv, usage):
    """(bundle, inputs JSON, output path, threads or None, max_new_tokens, the rest) of a runner's
    command line, or None after printing ``usage``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print(f"usage: {usage}", file=sys.stderr)
        return None
    threads = int(args[3]) if len(args) > 3 and int(args[3]) > 0 else None
    with open(args[1], encoding="utf-8") as fh:
        inputs = json.load(fh)
    return args[0], inputs, args[2], threads, int(args[4]) if len(args) > 4 else 128, args[5:]


def write_result(out_path, result):
    with open(out_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False)
    os.replace(out_path + ".tmp", out_path)


def extensions_library():
    """Path of onnxruntime-extensions' native library, found without importing its Python package."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_extensions")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(glob.glob(os.path.join(folder, "_extensions_pydll*")))
        if found:
            return found[0]
    from onnxruntime_extensions import get_library_path   # an unusual layout: ask the package

    return get_library_path()


# Session settings an app may choose to hold less memory: no arena (freed buffers go back to the
# system), no memory-pattern planning, no pre-packed copies of the weights.
SESSION_PRESETS = ("default", "lean-memory")


def session_for(bundle, threads=None, preset="default"):
    import onnxruntime as ort

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as fh:
        settings = json.load(fh).get("settings") or {}
    options = ort.SessionOptions()
    options.register_custom_ops_library(extensions_library())
    if settings.get("graph_optimization_level") == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if preset == "lean-memory":
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.disable_prepacking", "1")
    elif preset != "default":
        raise SystemExit(f"unknown session preset {preset!r} (one of {', '.join(SESSION_PRESETS)})")
    session = ort.InferenceSession(os.path.join(bundle, "model.onnx"), options, providers=["CPUExecutionProvider"])
    return session, str(options.graph_optimization_level), settings


def run(bundle, texts, threads=None, max_new_tokens=128, num_beams=1, warmup=3, preset="default"):
    python_mb, _ = memory_mib()
    import numpy as np

    numpy_mb = memory_mib()[0] - python_mb if python_mb is not None else None
    import onnxruntime  # imported before "idle" is read: the runtime is part of the base cost

    idle_mb, _ = memory_mib()
    idle_kinds = resident_kinds_mib()
    start = time.perf_counter()
    session, level, settings = session_for(bundle, threads, preset)
    load_s = time.perf_counter() - start
    loaded_mb, _ = memory_mib()
    pad, eos = settings.get("pad_token_id", 0), settings.get("eos_token_id", 1)

    def one(text):
        translation, ids = session.run(["translation", "token_ids"], {
            "text": np.asarray([text], dtype=object),
            "max_new_tokens": np.asarray([max_new_tokens], dtype=np.int32),
            "num_beams": np.asarray([num_beams], dtype=np.int32)})
        # as translate._strip: drop the decoder start token, everything from EOS on, and padding
        row = [int(t) for t in ids[0]]
        row = row[1:] if row and row[0] == pad else row
        row = row[: row.index(eos)] if eos in row else row
        return [t for t in row if t != pad], str(translation[0])

    for text in texts[:warmup]:
        one(text)
    ids, translations, seconds = [], [], []
    for text in texts:
        start = time.perf_counter()
        row, translation = one(text)
        seconds.append(time.perf_counter() - start)
        ids.append(row)
        translations.append(translation)

    return {"machine": platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "threads": threads, "load_s": load_s,
            "graph_optimization_level": level, "session_preset": preset, "warmup": warmup, "ids": ids,
            "translations": translations, "seconds": seconds, "memory": memory_record(idle_mb, loaded_mb, idle_kinds, python_mb, numpy_mb)}


def main(argv=None):
    parsed = runner_args(argv, "ort_onefile.py BUNDLE TEXTS.json OUT.json [THREADS] [MAX_NEW_TOKENS] [NUM_BEAMS] "
                               "[SESSION_PRESET]")
    if parsed is None:
        return 2
    bundle, texts, out_path, threads, max_new_tokens, rest = parsed
    write_result(out_path, run(bundle, texts, threads, max_new_tokens, int(rest[0]) if rest else 1,
                               preset=rest[1] if len(rest) > 1 else "default"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
