"""Run a one-file bundle (strings in, strings out) sentence by sentence: numpy, onnxruntime and
onnxruntime-extensions only.

Like ort_greedy.py this file runs on its own (``python ort_onefile.py BUNDLE TEXTS.json OUT.json
[THREADS] [MAX_NEW_TOKENS] [NUM_BEAMS]``), inside the aarch64 root under qemu or on a device,
and imports nothing from this package. The session is configured as the bundle's manifest asks
(its graph optimisation level: "basic" for portable numerics). Output: JSON with the token ids
and translation of every text and the seconds each took.
"""

import json
import os
import platform
import sys
import time


def session_for(bundle, threads=None):
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as fh:
        settings = json.load(fh).get("settings") or {}
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    if settings.get("graph_optimization_level") == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(bundle, "model.onnx"), options, providers=["CPUExecutionProvider"])
    return session, str(options.graph_optimization_level), settings


def run(bundle, texts, threads=None, max_new_tokens=128, num_beams=1, warmup=3):
    import numpy as np

    start = time.perf_counter()
    session, level, settings = session_for(bundle, threads)
    load_s = time.perf_counter() - start
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
    import onnxruntime

    return {"machine": platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "threads": threads, "load_s": load_s,
            "graph_optimization_level": level, "warmup": warmup, "ids": ids,
            "translations": translations, "seconds": seconds}


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print("usage: ort_onefile.py BUNDLE TEXTS.json OUT.json [THREADS] [MAX_NEW_TOKENS] [NUM_BEAMS]",
              file=sys.stderr)
        return 2
    bundle, texts_path, out_path = args[:3]
    threads = int(args[3]) if len(args) > 3 and int(args[3]) > 0 else None
    max_new_tokens = int(args[4]) if len(args) > 4 else 128
    num_beams = int(args[5]) if len(args) > 5 else 1
    with open(texts_path, encoding="utf-8") as fh:
        texts = json.load(fh)
    result = run(bundle, texts, threads, max_new_tokens, num_beams)
    with open(out_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False)
    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
