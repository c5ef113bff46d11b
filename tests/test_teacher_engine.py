"""Sequence-level KD targets decoded by CTranslate2: the same translations as PyTorch from the
same weights (exactly in float32), cached apart from PyTorch's, and the engine choice refused or
explained before any work."""

from __future__ import annotations

import json

import pytest

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.seqkd import SeqKDSettings, as_teacher, beam_decode, distill_targets
from ekd_edge.distill.teacher_engine import Ct2TeacherDecoder, choose_engine
from ekd_edge.errors import RecipeError
from ekd_edge.models import load_model

pytest.importorskip("ctranslate2")
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def setup(tokenizer_dir, sharp_checkpoint, lo_train):
    tokenizer = load_tokenizer(tokenizer_dir)
    teacher = as_teacher(load_model(sharp_checkpoint), tokenizer, sharp_checkpoint)
    return tokenizer, teacher, lo_train.src[:40], lo_train.tgt[:40]


def test_float32_ctranslate2_decodes_exactly_what_pytorch_decodes(setup, tmp_path):
    tokenizer, teacher, src, refs = setup
    decoder = Ct2TeacherDecoder(teacher, tmp_path, quantization="float32")
    settings = SeqKDSettings(beams=1, max_new_tokens=20, batch_size=8)
    want = beam_decode(teacher, tokenizer, src, refs, settings)
    assert beam_decode(teacher, tokenizer, src, refs, settings, decoder) == want
    assert len(set(want)) > 10      # a teacher that says the same thing to everything proves nothing
    # beam search: the two searches finish and normalise beams a little differently (when a beam
    # stops, length penalty on unfinished ones), so a few sentences may differ
    settings = SeqKDSettings(beams=3, max_new_tokens=20, batch_size=8)
    want = beam_decode(teacher, tokenizer, src, refs, settings)
    got = beam_decode(teacher, tokenizer, src, refs, settings, decoder)
    assert sum(a != b for a, b in zip(got, want)) <= len(src) // 10


def test_nbest_lists_come_best_first(setup, tmp_path):
    _, teacher, src, _ = setup
    decoder = Ct2TeacherDecoder(teacher, tmp_path, quantization="float32")
    lists = decoder.decode(src[:10], 20, 4, 4, 8)
    assert all(len(c) == 4 for c in lists)
    assert [c[0] for c in lists] == [c[0] for c in decoder.decode(src[:10], 20, 4, 1, 8)]


def test_int8_targets_are_cached_apart_from_pytorchs_and_reused(setup, tmp_path):
    tokenizer, teacher, src, refs = setup
    torch_targets = distill_targets(teacher, teacher.directory, tokenizer, src, refs, tmp_path,
                                    SeqKDSettings(beams=1, max_new_tokens=20, chunk=16))
    settings = SeqKDSettings(beams=1, max_new_tokens=20, chunk=16, engine="ctranslate2")
    first = distill_targets(teacher, teacher.directory, tokenizer, src, refs, tmp_path, settings)
    assert first.directory != torch_targets.directory and first.decoded_now == len(src)
    assert json.loads((first.directory / "meta.json").read_text())["engine"] == "ctranslate2-int8"
    # int8 weights flip near-tied tokens, and after a flip the rest of a sentence may differ: how
    # many sentences stay identical depends on the CPU's int8 kernel (28+ of 40 with VNNI, 17 with
    # AVX2 only). Character n-grams still agree closely; another model's output would not.
    from sacrebleu.metrics import CHRF

    agreement = CHRF().corpus_score(first.targets, [torch_targets.targets]).score
    to_references = CHRF().corpus_score(torch_targets.targets, [refs]).score
    print(f"int8 against float32 targets: chrF {agreement:.1f} ({to_references:.1f} float32 against the "
          f"references), {sum(a == b for a, b in zip(first.targets, torch_targets.targets))} of {len(src)} identical")
    assert agreement >= 60 and agreement >= to_references + 20
    again = distill_targets(teacher, teacher.directory, tokenizer, src, refs, tmp_path, settings)
    assert again.decoded_now == 0 and again.targets == first.targets
    assert len(list(tmp_path.glob("ct2-teacher-*-int8"))) == 1      # converted once, then reused


def test_engine_choice():
    assert choose_engine("pytorch", "marian", False, "r.toml") == ("pytorch", None)
    assert choose_engine("auto", "marian", False, "r.toml") == ("ctranslate2", None)
    engine, why = choose_engine("auto", "m2m_100", True, "r.toml")
    assert engine == "pytorch" and "m2m_100" in why
    engine, why = choose_engine("auto", "marian", True, "r.toml")
    assert engine == "pytorch" and "prompted" in why
    with pytest.raises(RecipeError, match=r"r.toml stage 2: \[distill\] teacher_engine = \"ctranslate2\" cannot"):
        choose_engine("ctranslate2", "t5", False, "r.toml stage 2")
    with pytest.raises(RecipeError, match="teacher_engine 'onnx' is not one of auto, pytorch, ctranslate2"):
        choose_engine("onnx", "marian", False, "r.toml")


def test_the_benchmark_trains_each_arm_on_its_own_engines_targets(tmp_path):
    """benchmarks/seqkd_engine.py at smoke size: each arm's run records the engine it asked for."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "seqkd_engine.py"), "--smoke", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert {e: a["seqkd"]["engine"] for e, a in result["arms"].items()} == {"pytorch": "pytorch",
                                                                           "ctranslate2": "ctranslate2"}
    speed = result["speed"]
    assert speed["sentences"] == 40 and "1" in speed["by_threads"]
    for row in speed["by_threads"].values():
        assert 0 <= row["identical"] <= 40 and [len(t) for t in row["rounds_s"].values()] == [speed["rounds"]] * 2
        assert row["speedup"] == pytest.approx(row["pytorch_s"] / row["ctranslate2_s"], rel=0.02)
        assert row["pytorch_s"] == pytest.approx(sorted(row["rounds_s"]["pytorch"])[speed["rounds"] // 2], abs=1e-3)
    assert "avx2" in (out / "result.md").read_text()      # the footer names the CPU's int8 flags
