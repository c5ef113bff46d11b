"""Greedy decoding of an exported bundle with plain onnxruntime sessions: numpy and onnxruntime only.

This file runs on its own (``python ort_greedy.py BUNDLE IDS.json OUT.json``) on machines that
have neither torch nor transformers nor ekd_edge: inside the aarch64 root under qemu, or on an
Android device. It therefore imports nothing from this package. Input: a JSON list of token id
lists (tokenised on the host). Output: JSON with the generated ids and per-sentence seconds, so
that two machines running the same file on the same ids can be compared token for token.

The loop follows what transformers' generate does for Marian with greedy search: start from the
decoder start token, never pick the pad token, stop at EOS, and (with a forced EOS token, as
Marian has) end on the last allowed position with EOS, so a run-on output has max_new_tokens - 1
tokens.
"""

import json
import platform
import sys
import time


def _config(bundle):
    """config.json, overridden by generation_config.json where present (as generate reads them)."""
    with open(f"{bundle}/config.json", encoding="utf-8") as fh:
        config = json.load(fh)
    try:
        with open(f"{bundle}/generation_config.json", encoding="utf-8") as fh:
            config.update(json.load(fh))
    except OSError:
        pass
    return config


def _settings(bundle):
    """The export settings recorded in the bundle's manifest.json ({} without one)."""
    try:
        with open(f"{bundle}/manifest.json", encoding="utf-8") as fh:
            return json.load(fh).get("settings") or {}
    except OSError:
        return {}


class GreedyDecoder:
    def __init__(self, bundle, threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # a bundle exported with portable numerics asks for the "basic" level (export/portable.py)
        if _settings(bundle).get("graph_optimization_level") == "basic":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.optimization_level = str(options.graph_optimization_level)
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(f"{bundle}/encoder_model.onnx", options, providers=providers)
        self.decoder = ort.InferenceSession(f"{bundle}/decoder_model_merged.onnx", options, providers=providers)
        config = _config(bundle)
        self.start_id = config.get("decoder_start_token_id", config["pad_token_id"])
        self.pad_id = config["pad_token_id"]
        self.eos_id = config["eos_token_id"]
        self.max_positions = config["max_position_embeddings"]
        self.forced_eos_id = config.get("forced_eos_token_id")
        # past inputs are named past_key_values.<layer>.<decoder|encoder>.<key|value>; shape (b, heads, len, dim)
        self.past_inputs = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.output_names = [o.name for o in self.decoder.get_outputs()]

    def generate(self, ids, max_new_tokens=128):
        import numpy as np

        input_ids = np.asarray([ids], dtype=np.int64)
        mask = np.ones_like(input_ids)
        hidden = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32) for i in self.past_inputs}
        token, out, use_cache = self.start_id, [], False
        limit = min(max_new_tokens, self.max_positions - 1)
        for step in range(limit):
            if step == limit - 1 and self.forced_eos_id is not None:
                break  # generate forces EOS on the last position: the sentence ends here
            feed = {"encoder_attention_mask": mask, "input_ids": np.asarray([[token]], dtype=np.int64),
                    "encoder_hidden_states": hidden, "use_cache_branch": np.asarray([use_cache])}
            feed.update(past)
            results = dict(zip(self.output_names, self.decoder.run(None, feed)))
            logits = results["logits"][0, -1].copy()
            logits[self.pad_id] = -np.inf  # Marian never generates its pad token
            token = int(logits.argmax())
            if token == self.eos_id:
                break
            out.append(token)
            for name in past:
                present = results[name.replace("past_key_values.", "present.")]
                # the encoder's keys/values are computed once, on the first step
                if use_cache and ".encoder." in name:
                    continue
                past[name] = present
            use_cache = True
        return out


def run(bundle, id_lists, threads=None, max_new_tokens=128, warmup=3):
    start = time.perf_counter()
    decoder = GreedyDecoder(bundle, threads)
    load_s = time.perf_counter() - start
    for ids in id_lists[:warmup]:
        decoder.generate(ids, max_new_tokens)
    outputs, seconds = [], []
    for ids in id_lists:
        start = time.perf_counter()
        outputs.append(decoder.generate(ids, max_new_tokens))
        seconds.append(time.perf_counter() - start)
    import onnxruntime

    return {"machine": platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "threads": threads, "load_s": load_s,
            "graph_optimization_level": decoder.optimization_level,
            "warmup": warmup, "ids": outputs, "seconds": seconds}


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print("usage: ort_greedy.py BUNDLE IDS.json OUT.json [THREADS] [MAX_NEW_TOKENS]", file=sys.stderr)
        return 2
    bundle, ids_path, out_path = args[:3]
    threads = int(args[3]) if len(args) > 3 and int(args[3]) > 0 else None
    max_new_tokens = int(args[4]) if len(args) > 4 else 128
    with open(ids_path, encoding="utf-8") as fh:
        id_lists = json.load(fh)
    result = run(bundle, id_lists, threads, max_new_tokens)
    with open(out_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    import os

    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
