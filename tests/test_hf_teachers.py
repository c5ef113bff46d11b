"""Hugging Face teachers with their own tokenizers: Marian (OPUS-MT layout), NLLB, mBART-50, T5.

Every checkpoint is built here with random weights and its own SentencePiece model trained on the
bundled data (hf_families.py), saved with save_pretrained and read back offline by `ekd-edge
distill`, as a downloaded directory would be.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import hf_families
from ekd_edge.cli import main
from ekd_edge.data.adopt import adopt_tokenizer, read_vocab_map
from ekd_edge.data.tokenizer import UNK_ID, load_tokenizer
from ekd_edge.distill.batches import collate, tokenize_pairs
from ekd_edge.distill.losses import kd_loss
from ekd_edge.distill.vocab_bridge import BridgedTeacher, bridged_kd_loss, mapped_log_probs
from ekd_edge.models.teacher import load_teacher, load_teacher_tokenizer, weights_digest

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STEERING = {
    "marian-opus": {},
    "m2m100": {"src_lang": "en", "tgt_lang": "de"},
    "nllb": {"src_lang": "eng_Latn", "tgt_lang": "deu_Latn"},
    "mbart50": {"src_lang": "en_XX", "tgt_lang": "de_DE"},
    "t5": {"prefix": "translate English to German: "},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, lo_train):
    root = tmp_path_factory.mktemp("hf")
    return {f: hf_families.build(f, root / f, lo_train.src[:1500], lo_train.tgt[:1500]) for f in hf_families.FAMILIES}


def toml_value(value: str) -> str:
    return json.dumps(value)


def recipe(tmp_path: Path, teacher_dir: Path, steering: dict, adopt: bool, extra_stage: str = "") -> Path:
    keys = "\n".join(f"{k} = {toml_value(v)}" for k, v in steering.items())
    text = f"""
name = "hf-teacher"
seed = 1
[data]
corpus = "lo-help-en-de"
max_train_pairs = 48
max_length = 24
long_pairs = "truncate"
valid_sentences = 4
[tokenizer]
{'from = "big"' if adopt else 'vocab_size = 200'}
{'trim = true' if adopt else ''}
[training]
batch_tokens = 512
warmup_steps = 1
eval_max_new_tokens = 6
[[teacher]]
name = "big"
checkpoint = {toml_value(str(teacher_dir))}
{keys}
{extra_stage}
[student]
size = "nano"
steps_per_stage = 2
"""
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("family", hf_families.FAMILIES)
def test_foreign_teacher_teaches_by_seq_kd(family, checkpoints, tmp_path):
    path = recipe(tmp_path, checkpoints[family], STEERING[family], adopt=False)
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "students" / "stage-1" / "metrics.json").read_text())
    assert metrics["stage_method"]["method"] == "seq_kd"
    assert metrics["stage_method"]["teacher_kind"] == "foreign"
    # the student keeps the run's own tokenizer; the teacher's translations were re-tokenised for it
    assert metrics["vocab"] != "" and not (tmp_path / "run" / "tokenizer" / "vocab_map.json").exists()
    targets = next((tmp_path / "run" / "cache").glob("seqkd-*/targets.txt")).read_text().split("\n")
    seqkd = metrics["stage_method"]["seqkd"]   # a stage shorter than an epoch decodes only its share
    assert len(targets) == seqkd["sources"] <= 48
    assert sum(bool(t.strip()) for t in targets) > len(targets) // 2


@pytest.mark.parametrize("family", hf_families.FAMILIES)
def test_adopted_trimmed_vocabulary_teaches_word_level(family, checkpoints, tmp_path):
    path = recipe(tmp_path, checkpoints[family], STEERING[family], adopt=True)
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "students" / "stage-1" / "metrics.json").read_text())
    assert metrics["stage_method"]["method"] == "word_kd"
    assert metrics["stage_method"]["teacher_kind"] == "bridged"
    vocab_map = read_vocab_map(run / "tokenizer")
    student_vocab = json.loads((run / "tokenizer" / "vocab.json").read_text())
    teacher_tok = load_teacher_tokenizer(checkpoints[family])
    assert vocab_map["student_vocab"] == len(student_vocab) < len(teacher_tok)
    # every kept piece maps to the teacher's id of that very piece
    for piece, sid in student_vocab.items():
        if sid > UNK_ID:
            assert teacher_tok.convert_ids_to_tokens(vocab_map["teacher_ids"][sid]) == piece
    # and the student's embedding matrix has exactly the trimmed size
    config = json.loads((run / "students" / "stage-1" / "config.json").read_text())
    assert config["vocab_size"] == len(student_vocab)


@pytest.mark.parametrize("family", hf_families.FAMILIES)
def test_bridge_gives_the_teacher_exactly_its_own_input(family, checkpoints, tmp_path, lo_train):
    """The bridged teacher's logits at each student position equal those of the teacher run on its
    own tokenisation (language tokens, prefix, forced BOS included) of the same text."""
    directory = checkpoints[family]
    own = load_teacher_tokenizer(directory)
    short = [(s, t) for s, t in zip(lo_train.src, lo_train.tgt) if 10 < len(s) < 80 and 10 < len(t) < 80][:6]
    src, tgt = [s for s, _ in short], [t for _, t in short]
    made = adopt_tokenizer(directory, own, tmp_path / "tok", lo_train.src[:300], lo_train.tgt[:300], trim=False,
                           teacher_digest=weights_digest(directory))
    student_tok = load_tokenizer(tmp_path / "tok")
    teacher = load_teacher("big", directory, "bridged", **STEERING[family])
    bridge = BridgedTeacher(teacher, made["teacher_ids"], UNK_ID, "forward_kl", 1.0, 0.5)
    pairs = tokenize_pairs(student_tok, src, tgt, 10_000)
    batch = collate(pairs, list(range(len(src))))
    labels = batch.pop("labels")
    bridged = bridge.teacher_logits(batch)

    enc = teacher.encode_sources(src, 512)
    targets = own(text_target=tgt, padding=True, return_tensors="pt").input_ids
    start = torch.full((len(src), 1), teacher.model.config.decoder_start_token_id)
    with torch.no_grad():
        direct = teacher.model(**enc, decoder_input_ids=torch.cat([start, targets[:, :-1]], dim=1)).logits
    skip = len(teacher.target_prefix_ids)
    for row in range(len(src)):
        n = int((labels[row] != -100).sum())
        own_n = int((targets[row] != own.pad_token_id).sum()) - skip
        assert n == own_n, "the student's pieces must be the teacher's pieces"
        torch.testing.assert_close(bridged[row, :n], direct[row, skip:skip + n], atol=1e-4, rtol=1e-4)


def test_trimmed_kd_equals_full_vocabulary_kd_without_mass_outside():
    """Where the teacher puts no mass outside the kept set, the mapped loss is the full-vocabulary
    loss of a student whose logits outside the kept set are −∞."""
    torch.manual_seed(0)
    full, kept_ids = 40, torch.tensor([3, 1, 2, 7, 9, 11, 20, 21, 30, 39])   # student id → teacher id
    outside = torch.ones(full, dtype=torch.bool)
    outside[kept_ids] = False
    teacher = torch.randn(2, 5, full) * 3
    teacher[..., outside] = -1e4
    student_kept = torch.randn(2, 5, len(kept_ids))
    student_full = torch.full((2, 5, full), -1e4)
    student_full[..., kept_ids] = student_kept
    labels = torch.randint(0, len(kept_ids), (2, 5))
    labels[1, 3:] = -100
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        for t in (0.5, 1.0, 2.0):
            expected = kd_loss(loss, student_full, teacher, labels, t, 0.3)
            got = bridged_kd_loss(loss, student_kept, teacher, kept_ids, UNK_ID, labels, t, 0.3)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_mass_on_dropped_pieces_goes_to_unk():
    torch.manual_seed(1)
    full, kept_ids = 12, torch.tensor([0, 1, 5, 6, 8])   # student <unk> (id 2) is teacher id 5
    teacher = torch.randn(1, 3, full)
    for t in (1.0, 2.0):
        p = torch.softmax(teacher / t, dim=-1)
        mapped = mapped_log_probs(teacher, kept_ids, UNK_ID, t).exp()
        dropped = [i for i in range(full) if i not in kept_ids.tolist()]
        torch.testing.assert_close(mapped.sum(-1), torch.ones(1, 3))
        torch.testing.assert_close(mapped[..., UNK_ID], p[..., 5] + p[..., dropped].sum(-1))
        torch.testing.assert_close(mapped[..., 3], p[..., 6])
        # the loss is KL(mapped teacher ‖ student) · T², as documented
        student = torch.randn(1, 3, len(kept_ids))
        labels = torch.zeros(1, 3, dtype=torch.long)
        log_s = torch.log_softmax(student / t, dim=-1)
        by_hand = (mapped * (mapped.log() - log_s)).sum(-1).mean() * t * t
        got = bridged_kd_loss("forward_kl", student, teacher, kept_ids, UNK_ID, labels, t)
        assert math.isclose(got.item(), by_hand.item(), rel_tol=1e-4)


@pytest.mark.parametrize("family", ["marian-opus", "nllb"])
def test_trimmed_student_exports_pass_fp32_parity(family, checkpoints, tmp_path, lo_train, lo_valid):
    """A student on a trimmed, re-numbered vocabulary (OPUS-MT: two SentencePiece models, a joint
    vocab.json in another order; NLLB: fairseq ids) exports to every format with exact fp32 parity;
    the one-file graph maps SentencePiece ids to the model's and back."""
    from ekd_edge.export.ct2 import export_ct2_bundle
    from ekd_edge.export.onefile import export_onefile
    from ekd_edge.export.onnx_export import export_bundle
    from ekd_edge.models import build_model, save_model
    from ekd_edge.runtime.onefile_engine import OneFileTranslator
    from ekd_edge.runtime.torch_engine import TorchTranslator

    directory = checkpoints[family]
    made = adopt_tokenizer(directory, load_teacher_tokenizer(directory), tmp_path / "tok", lo_train.src[:400],
                           lo_train.tgt[:400], trim=True, teacher_digest=weights_digest(directory))
    assert made["student_vocab"] < made["teacher_vocab"]
    torch.manual_seed(0)
    student = save_model(build_model("nano", made["student_vocab"], seed=5), tmp_path / "student",
                         tokenizer_dir=tmp_path / "tok")
    texts = [t for t in lo_valid.src if len(t) < 80][:12]
    reference = TorchTranslator(student)
    expected = reference.translate(texts, max_new_tokens=16)
    assert len(set(expected)) > 3, "the reference must depend on its input for this test to mean anything"

    manifest = export_onefile(student, tmp_path / "onefile", parity_texts=texts, max_new_tokens=16)
    assert manifest["parity"]["status"] == "passed"
    assert manifest["settings"]["id_maps"] == {"source_to_model": True, "decoding_pieces": True}
    onefile = OneFileTranslator(tmp_path / "onefile")
    assert onefile.generate_ids(texts, max_new_tokens=16) == reference.generate_ids(texts, max_new_tokens=16)
    assert onefile.translate(texts, max_new_tokens=16) == expected
    assert export_bundle(student, tmp_path / "onnx", parity_texts=texts, max_new_tokens=16)["parity"]["status"] == "passed"
    ct2 = export_ct2_bundle(student, tmp_path / "ct2", quantization="float32", parity_texts=texts, max_new_tokens=16)
    assert ct2["parity"]["status"] == "passed"


@pytest.mark.parametrize("family, steering, needles", [
    ("nllb", {"src_lang": "eng_Latn"}, ["[[teacher]] #1 ('big') tgt_lang", "needs its tgt language code",
                                        "it offers ace_Arab,", "deu_Latn"]),
    ("nllb", {"src_lang": "eng_Latn", "tgt_lang": "deu_Fake"}, ["tgt_lang = 'deu_Fake'", "not a language code",
                                                                "NllbTokenizer", "deu_Latn"]),
    ("nllb", {"src_lang": "en", "tgt_lang": "deu_Latn"}, ["src_lang = 'en'", "not a language code", "eng_Latn"]),
    ("mbart50", {}, ["src_lang", "a mbart teacher needs its src language code", "en_XX"]),
    ("mbart50", {"src_lang": "en", "tgt_lang": "de_DE"}, ["src_lang = 'en'", "not a language code", "en_XX"]),
    # M2M100's codes are "en", its tokens "__en__": the token is not a code, an unknown code neither
    ("m2m100", {"src_lang": "__en__", "tgt_lang": "de"}, ["src_lang = '__en__'", "M2M100Tokenizer", "write 'en'"]),
    ("m2m100", {"src_lang": "en", "tgt_lang": "xx"}, ["tgt_lang = 'xx'", "not a language code", "it offers af, am,"]),
    ("m2m100", {"src_lang": "en"}, ["tgt_lang", "a m2m_100 teacher needs its tgt language code", "zu"]),
    ("t5", {}, ["[[teacher]] #1 ('big') prefix", "needs its task prefix"]),
    ("marian-opus", {"src_lang": "en"}, ["src_lang", "only M2M100/NLLB and mBART teachers take language tokens"]),
])
def test_a_teachers_missing_or_wrong_steering_is_one_line_before_training(family, steering, needles, checkpoints,
                                                                           tmp_path, capsys):
    from test_bad_input import fails_cleanly

    path = recipe(tmp_path, checkpoints[family], steering, adopt=False)
    fails_cleanly(capsys, tmp_path, ["distill", path, "--run-dir", tmp_path / "run"], *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family, adopt, method, kind", [("nllb", False, "seq_kd", "foreign"),
                                                         ("marian-opus", True, "word_kd", "bridged")])
def test_direct_kd_baseline_learns_from_a_top_teacher_of_another_vocabulary_as_its_stage_does(
        family, adopt, method, kind, checkpoints, tmp_path):
    path = recipe(tmp_path, checkpoints[family], STEERING[family], adopt=adopt)
    path.write_text(path.read_text().replace("[student]\n", '[student]\nbaselines = ["direct-kd"]\n'))
    assert main(["distill", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    stage = json.loads((tmp_path / "run" / "students" / "stage-1" / "metrics.json").read_text())
    baseline = json.loads((tmp_path / "run" / "baselines" / "direct-kd" / "metrics.json").read_text())
    assert (baseline["stage_method"]["method"], baseline["stage_method"]["teacher_kind"]) == (method, kind)
    assert baseline["stage_method"]["method"] == stage["stage_method"]["method"]
    assert baseline["steps"] == stage["steps"]   # one stage: the ladder's total steps


@pytest.mark.parametrize("family, src, tgt", [("m2m100", "__en__", "__de__"), ("nllb", "eng_Latn", "deu_Latn"),
                                              ("mbart50", "en_XX", "de_DE")])
def test_language_codes_resolve_to_the_language_tokens_the_tokenizer_itself_uses(family, src, tgt, checkpoints):
    """The source starts with (or, NLLB legacy, carries) the very language token the family's own
    tokenizer puts there, and generation is forced to the target language's token, never to an
    ordinary piece spelled like the code (M2M100's vocabulary holds "en" and "de" as pieces)."""
    directory = checkpoints[family]
    teacher = load_teacher("big", directory, "foreign", **STEERING[family])
    own = load_teacher_tokenizer(directory)
    src_id, tgt_id = own.convert_tokens_to_ids(src), own.convert_tokens_to_ids(tgt)
    assert src_id not in (None, own.unk_token_id) and tgt_id not in (None, own.unk_token_id)
    if family == "m2m100":
        assert own.convert_tokens_to_ids("en") != own.unk_token_id, "the test needs 'en' to be an ordinary piece"
    assert teacher.source_prefix_ids == [src_id] and teacher.forced_bos_token_id == tgt_id
    assert teacher.target_prefix_ids == [tgt_id]
    encoded = teacher.encode_sources(["Select the cell range."], 64).input_ids[0].tolist()
    assert src_id in encoded and encoded.count(src_id) == 1
