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

from ort_onefile import memory_mib, memory_record, resident_kinds_mib, runner_args, write_result


def run(bundle, texts, threads=None, max_new_tokens=128, warmup=3):
    python_mb, _ = memory_mib()
    import ctranslate2
    import sentencepiece

    idle_mb, _ = memory_mib()
    idle_kinds = resident_kinds_mib()
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
    return {"machine": platform.machine(), "python": platform.python_version(),
            "ctranslate2": ctranslate2.__version__, "threads": threads, "load_s": load_s, "warmup": warmup,
            "translations": translations, "seconds": seconds, "memory": memory_record(idle_mb, loaded_mb, idle_kinds, python_mb,
                                                                           0.0 if "numpy" not in sys.modules else None)}


def main(argv=None):
    parsed = runner_args(argv, "ct2_app.py BUNDLE TEXTS.json OUT.json [THREADS] [MAX_NEW_TOKENS]")
    if parsed is None:
        return 2
    bundle, texts, out_path, threads, max_new_tokens, _ = parsed
    write_result(out_path, run(bundle, texts, threads, max_new_tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
