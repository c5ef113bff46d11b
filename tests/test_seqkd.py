"""Sequence-level KD on a real nano teacher: beam decoding, seq-inter selection, cache and resume."""

import json

import pytest

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.seqkd import (SeqKDSettings, beam_decode, closest_by_chrf, distill_targets,
                                    distilled_pairs)
from ekd_edge.runtime.torch_engine import TorchTranslator
from ekd_edge.models import load_model


@pytest.fixture(scope="module")
def setup(tokenizer_dir, nano_checkpoint, lo_train):
    return load_tokenizer(tokenizer_dir), load_model(nano_checkpoint), lo_train.src[:20], lo_train.tgt[:20]


def test_closest_by_chrf_picks_the_hypothesis_nearest_the_reference():
    assert closest_by_chrf(["Das ist gut", "Klicken Sie auf OK", "OK"], "Klicken Sie auf OK.") == "Klicken Sie auf OK"


def test_one_beam_equals_greedy(setup):
    tokenizer, teacher, src, refs = setup
    beam = beam_decode(teacher, tokenizer, src, refs, SeqKDSettings(beams=1, max_new_tokens=16))
    assert beam == TorchTranslator.from_model(teacher, tokenizer).translate(src, max_new_tokens=16)


def test_seq_inter_is_never_farther_from_the_reference_than_the_top_beam(setup):
    from sacrebleu.metrics import CHRF

    tokenizer, teacher, src, refs = setup
    top = beam_decode(teacher, tokenizer, src, refs, SeqKDSettings(beams=4, nbest=1, max_new_tokens=16))
    inter = beam_decode(teacher, tokenizer, src, refs, SeqKDSettings(beams=4, nbest=4, max_new_tokens=16))
    chrf = CHRF()
    for t, i, r in zip(top, inter, refs):
        assert chrf.sentence_score(i, [r]).score >= chrf.sentence_score(t, [r]).score - 1e-9
    assert inter != top   # on 20 sentences the n-best changes at least one choice


def test_decoding_is_cached_and_resumes_from_finished_chunks(setup, tmp_path):
    tokenizer, teacher, src, refs = setup
    settings = SeqKDSettings(beams=2, max_new_tokens=12, chunk=8)
    first = distill_targets(teacher, teacher.name_or_path, tokenizer, src, refs, tmp_path, settings)
    assert first.decoded_now == 20 and len(first.targets) == 20
    again = distill_targets(teacher, teacher.name_or_path, tokenizer, src, refs, tmp_path, settings)
    assert again.decoded_now == 0 and again.targets == first.targets
    # an interrupted run: two chunks finished, the final file not yet written
    (again.directory / "targets.txt").unlink()
    for start, chunk in ((0, first.targets[:8]), (8, first.targets[8:16])):
        (again.directory / f"chunk-{start:08d}.json").write_text(json.dumps(chunk))
    resumed = distill_targets(teacher, teacher.name_or_path, tokenizer, src, refs, tmp_path, settings)
    assert resumed.decoded_now == 4 and resumed.targets == first.targets


def test_mixing_references_and_distilled_targets(setup):
    tokenizer, _, src, refs = setup
    distilled = ["x"] * 19 + [""]
    only = distilled_pairs(tokenizer, src, refs, distilled, "distilled", 64)
    both = distilled_pairs(tokenizer, src, refs, distilled, "both", 64)
    assert len(only) + only.dropped_long == 19
    assert len(both) + both.dropped_long == 39
    with pytest.raises(ValueError, match="mix"):
        distilled_pairs(tokenizer, src, refs, distilled, "half", 64)


class _Stream:
    """A training stream whose batch at step s holds s + 1 pairs (pair ids are not used)."""

    def indices(self, step: int) -> list[int]:
        return list(range(step + 1))


def test_a_short_stage_samples_exactly_the_pairs_its_steps_hold():
    from ekd_edge.distill.seqkd import stage_sources

    chosen = stage_sources(_Stream(), first_step=3, steps=2, corpus_pairs=100, seed=7)
    assert len(chosen) == 4 + 5   # steps 3 and 4 of the stream, not steps 0 and 1
    assert len(set(chosen.tolist())) == len(chosen) and list(chosen) == sorted(chosen)
    assert 0 <= chosen.min() and chosen.max() < 100
    assert list(stage_sources(_Stream(), 3, 2, 100, seed=7)) == list(chosen)      # a restart draws the same
    assert list(stage_sources(_Stream(), 3, 2, 100, seed=8)) != list(chosen)
    # a stage that trains on the whole corpus decodes all of it, in corpus order, as before
    assert stage_sources(_Stream(), 0, 14, 100, seed=7) is None                    # 1 + ... + 14 = 105 pairs


def test_a_short_seq_kd_stage_of_a_ladder_decodes_only_its_share(tmp_path, nano_checkpoint):
    """Stage 1 (seq-KD from a checkpoint with its own vocabulary) trains 3 steps on 300 pairs: the teacher
    decodes as many sources as those 3 batches of the training stream hold, not the 300."""
    import tomllib

    import numpy as np

    from ekd_edge.distill.batches import BatchStream, MappedPairs
    from ekd_edge.distill.ladder import run_recipe
    from ekd_edge.distill.recipe import parse_recipe
    from test_distill import RECIPE_TOML

    text = RECIPE_TOML.replace('name = "t-small"\nsize = "nano"\nsteps = 4', f'name = "t-small"\ncheckpoint = "{nano_checkpoint}"')
    run_dir = tmp_path / "run"
    summary = run_recipe(parse_recipe(tomllib.loads(text), "r.toml"), run_dir, text)
    record = summary["stages"]["stage-1"]["stage_method"]["seqkd"]
    stores = [MappedPairs.open(p) for p in (run_dir / "cache").glob("pairs-*")]
    train = max(stores, key=len)   # the training split's tokens (the other store: the stage's distilled pairs)
    stream = BatchStream(train, 512, 3)
    held = sum(len(stream.indices(s)) for s in range(3))
    assert held < 300 and record["sampled"]
    assert record["sources"] == record["decoded_now"] == held
    (decoded,) = (run_dir / "cache").glob("seqkd-*/targets.txt")
    assert len(decoded.read_text().split("\n")) == held
    assert np.isfinite(summary["stages"]["stage-1"]["final_train_loss"])
