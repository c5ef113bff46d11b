"""Corpus loading and the joint tokenizer: real bundled data, and each kind of bad input."""

import json
import subprocess
import sys

import pytest

from ekd_edge.data import BUNDLED_CORPORA, load_corpus, load_tokenizer
from ekd_edge.data.corpus import load_parallel, read_lines
from ekd_edge.errors import CorpusError

EXPECTED_SIZES = {"lo-help-en-de": (32730, 1294, 1086), "bible-en-es": (28736, 580, 1050)}


@pytest.mark.parametrize("name", sorted(BUNDLED_CORPORA))
def test_bundled_corpora_load_with_documented_sizes(name):
    corpus = load_corpus(name)
    sizes = tuple(len(corpus.split(split)) for split in ("train", "valid", "test"))
    assert sizes == EXPECTED_SIZES[name]


def test_bundled_test_split_is_disjoint_from_train():
    corpus = load_corpus("lo-help-en-de")
    train = set(corpus.split("train").src)
    assert not train & set(corpus.split("test").src)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_misaligned_files_name_both_files_and_the_line(tmp_path):
    src = write(tmp_path / "a.en", b"one\ntwo\nthree\n")
    tgt = write(tmp_path / "a.de", b"eins\nzwei\n")
    with pytest.raises(CorpusError) as err:
        load_parallel(src, tgt)
    message = str(err.value)
    assert "\n" not in message
    assert str(src) in message and str(tgt) in message and "3 lines" in message and "line without a partner: 3" in message


def test_empty_line_is_an_error_naming_file_and_line(tmp_path):
    src = write(tmp_path / "a.en", b"one\ntwo\nthree\n")
    tgt = write(tmp_path / "a.de", b"eins\n   \ndrei\n")
    with pytest.raises(CorpusError, match=rf"^{tmp_path / 'a.de'}:2: empty line"):
        load_parallel(src, tgt)


def test_empty_lines_can_be_skipped_and_are_counted(tmp_path):
    src = write(tmp_path / "a.en", b"one\n\nthree\n")
    tgt = write(tmp_path / "a.de", b"eins\nzwei\ndrei\n")
    text = load_parallel(src, tgt, empty="skip")
    assert text.src == ["one", "three"] and text.tgt == ["eins", "drei"] and text.skipped_empty == 1


def test_invalid_utf8_names_line_and_column(tmp_path):
    src = write(tmp_path / "a.en", b"good\nbad \xff byte\n")
    with pytest.raises(CorpusError, match=r"a\.en:2: invalid UTF-8 \(byte 0xff at column 5\)"):
        read_lines(src)


def test_missing_file_and_missing_partner(tmp_path):
    with pytest.raises(CorpusError, match="file not found"):
        read_lines(tmp_path / "nope.en")
    write(tmp_path / "train.en", b"x\n")
    with pytest.raises(CorpusError, match="has train.en but no train.de"):
        load_corpus(tmp_path, "en", "de")


def test_user_corpus_directory(tmp_path):
    write(tmp_path / "train.en", "Hello\nWorld\n".encode())
    write(tmp_path / "train.de", "Hallo\nWelt\n".encode())
    corpus = load_corpus(tmp_path, "en", "de")
    assert corpus.split("train").tgt == ["Hallo", "Welt"]
    with pytest.raises(CorpusError, match="no 'test' split"):
        corpus.split("test")


def test_unknown_corpus_name():
    with pytest.raises(CorpusError, match="neither a bundled corpus"):
        load_corpus("no-such-corpus")


def test_tokenizer_is_a_transformers_tokenizer_with_spm_ids(tokenizer_dir, lo_train):
    import sentencepiece as spm

    tokenizer = load_tokenizer(tokenizer_dir)
    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "source.spm"))
    text = lo_train.src[5]
    ids = tokenizer(text)["input_ids"]
    assert ids[:-1] == processor.encode(text) and ids[-1] == tokenizer.eos_token_id
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(json.loads((tokenizer_dir / "vocab.json").read_text())) == len(tokenizer)


@pytest.mark.parametrize("make_bad,expected", [
    (lambda d: (d / "train.en").write_bytes(b"a\nb\n") and (d / "train.de").write_bytes(b"a\n"), "not aligned"),
    (lambda d: (d / "train.en").write_bytes(b"a\n\xc3\n") and (d / "train.de").write_bytes(b"a\nb\n"), "train.en:2: invalid UTF-8"),
    (lambda d: (d / "train.en").write_bytes(b"a\nb\n") and (d / "train.de").write_bytes(b"a\n \n"), "train.de:2: empty line"),
])
def test_cli_bench_reports_bad_input_in_one_line(tmp_path, make_bad, expected):
    make_bad(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "bench", str(tmp_path), "--src", str(tmp_path / "train.en"),
                           "--ref", str(tmp_path / "train.de"), "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert not (tmp_path / "report").exists()
