"""Run a CTranslate2 bundle sentence by sentence as a deployment would: ctranslate2 and
sentencepiece only.

Runs on its own (``python ct2_app.py BUNDLE TEXTS.json OUT.json [THREADS] [MAX_NEW_TOKENS]``)
and imports nothing from this package but its sibling ort_onefile.py (for the memory reading), so
torch and transformers never count towards the memory of the model. The bundle's SentencePiece
models tokenise (source.spm) and detokenise (target.spm); the source gets the end-of-sentence
token, as MarianTokenizer adds it. Output: the same JSON fields as ort_onefile.py (translations,
seconds, load_s, memory), without token ids.
"""

import json
import os
import platform
import sys
import time

from ort_onefile import memory_mib


def run(bundle, texts, threads=None, max_new_tokens=128, warmup=3):
    import ctranslate2
    import sentencepiece

    idle_mb, _ = memory_mib()
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as fh:
        variant = json.load(fh).get("variant", "int8")
    start = time.perf_counter()
    translator = ctranslate2.Translator(os.path.join(bundle, "ct2"), device="cpu",
                                        compute_type="int8" if variant == "int8" else "float32",
                                        intra_threads=int(threads or 0), inter_threads=1)
    source = sentencepiece.SentencePieceProcessor(model_file=os.path.join(bundle, "source.spm"))
    target = sentencepiece.SentencePieceProcessor(model_file=os.path.join(bundle, "target.spm"))
    load_s = time.perf_counter() - start
    loaded_mb, _ = memory_mib()

    def one(text):
        pieces = source.encode(text, out_type=str) + ["</s>"]
        result = translator.translate_batch([pieces], beam_size=1, max_decoding_length=max(1, max_new_tokens - 1))
        return target.decode(result[0].hypotheses[0])

    for text in texts[:warmup]:
        one(text)
    translations, seconds = [], []
    for text in texts:
        start = time.perf_counter()
        translations.append(one(text))
        seconds.append(time.perf_counter() - start)
    _, peak_mb = memory_mib()
    memory = {"idle_rss_mb": idle_mb, "loaded_rss_mb": loaded_mb, "peak_rss_mb": peak_mb,
              "model_mb": peak_mb - idle_mb if peak_mb is not None and idle_mb is not None else None,
              "source": "/proc/self/status VmRSS (idle, loaded), VmHWM (peak)",
              "torch_imported": "torch" in sys.modules}
    return {"machine": platform.machine(), "python": platform.python_version(),
            "ctranslate2": ctranslate2.__version__, "threads": threads, "load_s": load_s, "warmup": warmup,
            "translations": translations, "seconds": seconds, "memory": memory}


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print("usage: ct2_app.py BUNDLE TEXTS.json OUT.json [THREADS] [MAX_NEW_TOKENS]", file=sys.stderr)
        return 2
    bundle, texts_path, out_path = args[:3]
    threads = int(args[3]) if len(args) > 3 and int(args[3]) > 0 else None
    max_new_tokens = int(args[4]) if len(args) > 4 else 128
    with open(texts_path, encoding="utf-8") as fh:
        texts = json.load(fh)
    result = run(bundle, texts, threads, max_new_tokens)
    with open(out_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh, ensure_ascii=False)
    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
