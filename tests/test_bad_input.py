"""Every bad-input case of docs/errors.md at the command line: one line naming the file (and line),
exit status 2, and no file that existed before changed (contents and modification time).

The cases run ``ekd_edge.cli.main`` in-process (the same code path as the console script, minus
the interpreter start); one case runs ``python -m ekd_edge`` in a subprocess to pin the real exit
status and stream.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import tiny_recipe
from ekd_edge.cli import main
from ekd_edge.distill.batches import TokenizedPairs
from ekd_edge.distill.batches import truncate_pairs
from ekd_edge.runtime.manifest import FORMAT_NAME, FORMAT_VERSION, list_files
from ekd_edge.export.manifest import write_manifest

TRAINED_TEACHER = 'name = "t"\nsize = "nano"\nsteps = 2'


def recipe(tmp_path, corpus="lo-help-en-de", src_lang="", tgt_lang="", teacher=TRAINED_TEACHER, extra=""):
    path = tmp_path / "recipe.toml"
    path.write_text(tiny_recipe("bad-input", f'[[teacher]]\n{teacher}\n[student]\nsize = "nano"\nsteps_per_stage = 2\n',
                                corpus=corpus, data=f'src_lang = "{src_lang}"\ntgt_lang = "{tgt_lang}"\n') + extra)
    return path


def snapshot(root):
    """sha256 and mtime of every file under ``root``."""
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def fails_cleanly(capsys, root, argv, *needles):
    """Run the CLI; it must exit 2 with one 'error:' line holding every needle and change nothing."""
    before = snapshot(root)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    # Progress logs may come first; the error is the last line, and a single one.
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]
    assert err.startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, lines
    for needle in needles:
        assert str(needle) in err, (needle, err)
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed changed
    return err


def user_corpus(tmp_path, train_en=None, train_de=None):
    """A corpus directory from the bundled data, with the given lines replacing the training files."""
    from ekd_edge.data import load_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lo = load_corpus("lo-help-en-de")
    for split in ("train", "valid", "test"):
        text = lo.split(split).head(200)
        (corpus / f"{split}.en").write_text("\n".join(text.src) + "\n")
        (corpus / f"{split}.de").write_text("\n".join(text.tgt) + "\n")
    if train_en is not None:
        (corpus / "train.en").write_bytes(train_en)
    if train_de is not None:
        (corpus / "train.de").write_bytes(train_de)
    return corpus


def test_misaligned_corpus(tmp_path, capsys):
    corpus = user_corpus(tmp_path, train_en=b"one\ntwo\nthree\n", train_de=b"eins\nzwei\n")
    fails_cleanly(capsys, tmp_path, ["distill", recipe(tmp_path, corpus, "en", "de"), "--run-dir", tmp_path / "run"],
                  corpus / "train.en", "3 lines but", "not aligned", "first line without a partner: 3")
    assert not (tmp_path / "run").exists()


def test_whitespace_only_line_is_an_error_by_default(tmp_path, capsys):
    corpus = user_corpus(tmp_path, train_en=b"one\ntwo\nthree\n", train_de=b"eins\n \t \ndrei\n")
    fails_cleanly(capsys, tmp_path, ["distill", recipe(tmp_path, corpus, "en", "de"), "--run-dir", tmp_path / "run"],
                  f"{corpus / 'train.de'}:2: empty line")


def test_invalid_utf8(tmp_path, capsys):
    corpus = user_corpus(tmp_path, train_en=b"one\nt\xffwo\nthree\n", train_de=b"eins\nzwei\ndrei\n")
    fails_cleanly(capsys, tmp_path, ["distill", recipe(tmp_path, corpus, "en", "de"), "--run-dir", tmp_path / "run"],
                  f"{corpus / 'train.en'}:2: invalid UTF-8 (byte 0xff at column 2)")


def test_word_level_kd_from_a_teacher_with_another_vocabulary(tmp_path, capsys, nano_checkpoint):
    teacher = f'name = "t"\ncheckpoint = "{nano_checkpoint}"'
    path = recipe(tmp_path, teacher=teacher, extra='[[stage]]\nmethod = "word_kd"\n')
    fails_cleanly(capsys, tmp_path, ["distill", path, "--run-dir", tmp_path / "run"],
                  "[[stage]] #1 (teacher 't')", "has its own tokenizer", 'use method = "seq_kd"')
    assert not (tmp_path / "run" / "teachers").exists()


def test_missing_teacher_checkpoint(tmp_path, capsys):
    missing = tmp_path / "no-such-teacher"
    fails_cleanly(capsys, tmp_path, ["distill", recipe(tmp_path, teacher=f'name = "t"\ncheckpoint = "{missing}"'),
                                     "--run-dir", tmp_path / "run"], missing, "checkpoint directory not found")


def test_missing_model(tmp_path, capsys):
    fails_cleanly(capsys, tmp_path, ["translate", tmp_path / "nowhere", "hello"], tmp_path / "nowhere",
                  "neither an exported bundle")


def test_corrupt_checkpoint_weights(tmp_path, capsys, nano_checkpoint):
    broken = tmp_path / "broken"
    shutil.copytree(nano_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"\x00\x01 not safetensors")
    fails_cleanly(capsys, tmp_path, ["translate", broken, "hello"], broken / "model.safetensors", "corrupt weights file")


def test_pickled_weights_are_not_loaded(tmp_path, capsys, nano_checkpoint):
    pickled = tmp_path / "pickled"
    shutil.copytree(nano_checkpoint, pickled)
    os.replace(pickled / "model.safetensors", pickled / "pytorch_model.bin")
    fails_cleanly(capsys, tmp_path, ["translate", pickled, "hello"], pickled, "pickled .bin weights are not loaded")


def test_unsupported_model_type(tmp_path, capsys, nano_checkpoint):
    other = tmp_path / "bert"
    shutil.copytree(nano_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    fails_cleanly(capsys, tmp_path, ["translate", other, "hello"], other / "config.json", "unsupported model type 'bert'")


def test_corrupt_progress_checkpoint(tmp_path, capsys):
    recipe_file = recipe(tmp_path)
    run_dir = tmp_path / "run"
    (run_dir / "teachers").mkdir(parents=True)
    (run_dir / "recipe.toml").write_text(recipe_file.read_text())
    (run_dir / "teachers" / "t.progress.pt").write_bytes(b"PK\x03\x04 cut off mid-write")
    fails_cleanly(capsys, tmp_path, ["distill", recipe_file, "--run-dir", run_dir, "--resume"],
                  run_dir / "teachers" / "t.progress.pt", "corrupt progress checkpoint")


@pytest.fixture
def fake_bundle(tmp_path, nano_checkpoint):
    """A bundle whose manifest is right but whose graphs are not ONNX: checksums pass, loading fails."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("config.json", "source.spm", "target.spm", "vocab.json"):
        shutil.copy(nano_checkpoint / name, bundle / name)
    (bundle / "encoder_model.onnx").write_bytes(b"not an onnx graph")
    (bundle / "decoder_model_merged.onnx").write_bytes(b"not an onnx graph either")
    write_manifest(bundle, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "files": list_files(bundle)})
    return bundle


def test_tampered_bundle(tmp_path, capsys, fake_bundle):
    graph = fake_bundle / "encoder_model.onnx"
    graph.write_bytes(graph.read_bytes().replace(b"not", b"NOT"))
    fails_cleanly(capsys, tmp_path, ["translate", fake_bundle, "hello"], graph, "sha256 differs from manifest")


def test_corrupt_onnx_graph_with_a_valid_manifest(tmp_path, capsys, fake_bundle):
    fails_cleanly(capsys, tmp_path, ["translate", fake_bundle, "hello"], fake_bundle, "onnxruntime cannot load")


def test_manifest_cannot_point_outside_the_bundle(tmp_path, capsys, fake_bundle):
    (tmp_path / "secret.txt").write_text("outside")
    manifest = json.loads((fake_bundle / "manifest.json").read_text())
    manifest["files"].append({"path": "../secret.txt", "sha256": "0" * 64, "size": 7})
    (fake_bundle / "manifest.json").write_text(json.dumps(manifest))
    fails_cleanly(capsys, tmp_path, ["translate", fake_bundle, "hello"], fake_bundle / "manifest.json",
                  "'../secret.txt' points outside the bundle")


def test_run_dir_that_holds_something_else(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    fails_cleanly(capsys, tmp_path, ["distill", recipe(tmp_path), "--run-dir", foreign], foreign,
                  "not an ekd-edge run")


def test_export_out_dir_that_holds_something_else(tmp_path, capsys, nano_checkpoint):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    fails_cleanly(capsys, tmp_path, ["export", nano_checkpoint, "--out", foreign, "--parity-sentences", "0"],
                  foreign, "not an ekd-edge bundle", "refusing to replace it")


def test_recipe_with_an_unknown_key(tmp_path, capsys):
    path = recipe(tmp_path, extra="[distill]\ntemprature = 2.0\n")
    fails_cleanly(capsys, tmp_path, ["distill", path, "--run-dir", tmp_path / "run"], path, "[distill]",
                  "unknown key(s) temprature")


@pytest.mark.parametrize("extra, needle", [
    ("[distill]\nalpha = 1.5\n", "[distill] alpha must be in [0, 1]"),
    ("[distill]\nloss = \"kl\"\n", "[distill] loss must be one of"),
    ("[distill]\ntemperature = 0\n", "[distill] temperature must be > 0"),
])
def test_recipe_with_an_impossible_value(tmp_path, capsys, extra, needle):
    path = recipe(tmp_path, extra=extra)
    fails_cleanly(capsys, tmp_path, ["distill", path, "--run-dir", tmp_path / "run"], path, needle)


def test_recipe_policy_keys_are_checked(tmp_path, capsys):
    text = recipe(tmp_path).read_text().replace("threads = 1", "threads = 1\ncheckpoint_every = -5")
    text = text.replace('max_length = 24', 'max_length = 24\nlong_pairs = "cut"')
    path = tmp_path / "policy.toml"
    path.write_text(text)
    fails_cleanly(capsys, tmp_path, ["distill", path, "--run-dir", tmp_path / "run"], "long_pairs must be")


def test_over_long_pairs_are_truncated_and_counted():
    eos = 0
    pairs = TokenizedPairs([[5, 6, 7, 8, 9, eos], [5, eos]], [[4, eos], [4, 4, 4, 4, 4, 4, 4, eos]], dropped_long=1)
    cut = truncate_pairs(pairs, 4)
    assert cut.src == [[5, 6, 7, eos], [5, eos]] and cut.tgt == [[4, eos], [4, 4, 4, eos]]
    assert cut.dropped_long == 1 + 2  # the count keeps what tokenize_pairs dropped, plus the cut pairs


def test_the_real_command_exits_2_with_one_line_on_stderr(tmp_path):
    """The console entry point itself: exit status 2, nothing on stdout, one line on stderr."""
    corpus = user_corpus(tmp_path, train_en=b"one\ntwo\n", train_de=b"eins\n")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "distill", str(recipe(tmp_path, corpus, "en", "de")),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert f"{corpus / 'train.en'}: 2 lines but" in proc.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# The table: one row per bad input (docs/errors.md lists each with its policy). Each row builds
# its inputs under tmp_path and returns (argv, needles); the run must exit 2 with one error line
# holding every needle, no traceback, and no file that existed before changed.

def _foreign_manifest_dir(tmp_path, **_):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "manifest.json").write_text('{"album": "summer"}')   # valid JSON, not ours
    (out / "beach.jpg").write_bytes(b"\xff\xd8 a picture")
    return out


def _bundle_with_extra_file(tmp_path, fake_bundle, **_):
    (fake_bundle / "notes.txt").write_text("my notes, kept inside the bundle folder")
    return fake_bundle


def _size_recipe(tmp_path, size_table):
    return recipe(tmp_path, teacher=f'name = "t"\nsize = {size_table}\nsteps = 2')


def _with_recipe_text(tmp_path, old, new):
    path = recipe(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    return path


def _long_corpus(tmp_path):
    """Real sentences, twelve to a line: every training pair is far over max_length = 24 tokens."""
    from ekd_edge.data import load_corpus

    text = load_corpus("lo-help-en-de").split("train").head(2400)
    join = lambda side: "".join(" ".join(side[i:i + 12]) + "\n" for i in range(0, 2400, 12)).encode()
    return user_corpus(tmp_path, train_en=join(text.src), train_de=join(text.tgt))


def _distill(tmp_path, path):
    return ["distill", path, "--run-dir", tmp_path / "run"]


BAD_INPUTS = {
    # --- data loss: an export never replaces what it did not write
    "export-out-holds-foreign-manifest": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", _foreign_manifest_dir(tmp_path), "--parity-sentences", "0"],
        ["photos", "not an intact ekd-edge bundle"]),
    "export-out-holds-edited-bundle": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", _bundle_with_extra_file(tmp_path, bundle), "--parity-sentences", "0"],
        ["notes.txt", "not an intact ekd-edge bundle"]),
    "export-out-is-a-file": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", _touch(tmp_path / "model.bin"), "--parity-sentences", "0"],
        ["model.bin", "not a directory"]),
    # --- data loss: recipe names are identifiers, never paths
    "teacher-name-escapes-the-run": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, teacher='name = "../../x"\nsize = "nano"\nsteps = 2')),
        ["[[teacher]] #1 name '../../x'", "never a path"]),
    "teacher-name-absolute": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, teacher=f'name = "{tmp_path}/t"\nsize = "nano"\nsteps = 2')),
        ["[[teacher]] #1 name", "never a path"]),
    "teacher-name-empty": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, teacher='name = ""\nsize = "nano"\nsteps = 2')),
        ["[[teacher]] #1 name ''"]),
    "student-name-with-slash": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _with_recipe_text(tmp_path, '[student]\n', '[student]\nname = "a/b"\n')),
        ["[student] name 'a/b'"]),
    "recipe-name-dot-dot": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _with_recipe_text(tmp_path, 'name = "bad-input"', 'name = ".."')),
        ["name '..'"]),
    # --- validation before any work
    "d-model-not-divisible-by-heads": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _size_recipe(tmp_path, "{ d_model = 30, encoder_layers = 1, decoder_layers = 1, "
                                                  "attention_heads = 4, ffn_dim = 64 }")),
        ["[[teacher]] #1 size", "d_model 30 is not divisible by attention_heads 4"]),
    "zero-layers": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _size_recipe(tmp_path, "{ d_model = 32, encoder_layers = 0, decoder_layers = 1, "
                                                  "attention_heads = 2, ffn_dim = 64 }")),
        ["[[teacher]] #1 size.encoder_layers", ">= 1"]),
    "negative-eval-max-new-tokens": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _with_recipe_text(tmp_path, "eval_max_new_tokens = 4", "eval_max_new_tokens = -3")),
        ["eval_max_new_tokens must be >= 1"]),
    "copy-init-width-mismatch": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _copy_init_recipe(tmp_path)),
        ["[[stage]] #1", "copy-init needs a student as wide as", "d_model"]),
    "vocabulary-larger-than-corpus-allows": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _with_recipe_text(tmp_path, "vocab_size = 120", "vocab_size = 60000")),
        ["[tokenizer] vocab_size 60000", "SentencePiece cannot build"]),
    "every-pair-over-max-length": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, corpus=_long_corpus(tmp_path), src_lang="en", tgt_lang="de")),
        ["max_length 24", "every one of the", "training pairs is longer"]),
    "empty-corpus-files": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, corpus=user_corpus(tmp_path, train_en=b"", train_de=b""),
                                  src_lang="en", tgt_lang="de")),
        ["train.en", "no sentence pairs in the train split"]),
    "recipe-not-utf8": lambda tmp_path, ckpt, bundle: (
        ["distill", _bytes(tmp_path / "latin1.toml", 'name = "caf\xe9"\n'.encode("latin-1")), "--run-dir",
         tmp_path / "run"],
        ["latin1.toml:1", "not UTF-8"]),
    "recipe-is-a-directory": lambda tmp_path, ckpt, bundle: (
        ["distill", _mkdir(tmp_path / "recipes"), "--run-dir", tmp_path / "run"],
        ["recipes", "no such recipe file"]),
    # --- everything the recipe names is checked before the first write
    "teacher-with-a-corrupt-sentencepiece-model": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, teacher=f'name = "t"\ncheckpoint = "{_corrupt_spm(tmp_path, ckpt)}"')),
        [tmp_path / "damaged" / "source.spm", "corrupt SentencePiece model"]),
    "teacher-cache-k-over-the-adopted-vocabulary": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _adopting_recipe(tmp_path, ckpt, "[[stage]]\nteacher_cache_k = 200\n[[stage]]\n")),
        ["[[stage]] #1: teacher_cache_k must be in 0..103", "adopted from teacher 'big', trimmed"]),
    "tokenizer-from-with-vocab-size": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, _adopting_recipe(tmp_path, ckpt, "", keep_vocab_size=True)),
        ["[tokenizer]: vocab_size and from = 'big' conflict", "remove vocab_size"]),
    "teacher-language-token-instead-of-its-code": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path, teacher=f'name = "t"\ncheckpoint = "{_m2m100(tmp_path)}"\n'
                                                    'src_lang = "__en__"\ntgt_lang = "de"')),
        ["[[teacher]] #1 ('t') src_lang = '__en__'", "not a language code", "M2M100Tokenizer", "write 'en'"]),
    "only-names-an-unknown-teacher": lambda tmp_path, ckpt, bundle: (
        _distill(tmp_path, recipe(tmp_path)) + ["--only", "nobody"],
        ["--only", "no teacher or baseline named nobody"]),
    # --- translate
    "translate-beams-zero": lambda tmp_path, ckpt, bundle: (
        ["translate", ckpt, "--beams", "0", "Hello"], ["--beams", "0 is outside 1 or more"]),
    "translate-max-new-tokens-zero": lambda tmp_path, ckpt, bundle: (
        ["translate", ckpt, "--max-new-tokens", "0", "Hello"], ["--max-new-tokens", "outside 1 or more"]),
    "translate-max-new-tokens-not-a-number": lambda tmp_path, ckpt, bundle: (
        ["translate", ckpt, "--max-new-tokens", "many", "Hello"], ["--max-new-tokens", "'many' is not a whole number"]),
    "translate-not-a-model": lambda tmp_path, ckpt, bundle: (
        ["translate", _mkdir(tmp_path / "empty"), "Hello"], ["empty", "neither an exported bundle"]),
    # --- bench
    "bench-latency-sentences-zero": lambda tmp_path, ckpt, bundle: (
        ["bench", ckpt, "--latency-sentences", "0"], ["--latency-sentences", "outside 1 or more"]),
    "bench-out-is-a-file": lambda tmp_path, ckpt, bundle: (
        ["bench", ckpt, "--out", _touch(tmp_path / "report.txt"), "--no-memory"], ["report.txt", "not a directory"]),
    "bench-out-holds-users-report": lambda tmp_path, ckpt, bundle: (
        ["bench", ckpt, "--out", _users_report_dir(tmp_path), "--no-memory"],
        ["report.md", "not written by ekd-edge", "refusing to overwrite"]),
    "bench-threads-negative": lambda tmp_path, ckpt, bundle: (
        ["bench", ckpt, "--threads", "-1"], ["--threads", "outside 0 or more"]),
    # --- export arguments
    "export-parity-threshold-above-one": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", tmp_path / "b", "--parity-threshold", "1.5"], ["--parity-threshold", "[0, 1]"]),
    "export-missing-checkpoint": lambda tmp_path, ckpt, bundle: (
        ["export", tmp_path / "nowhere", "--out", tmp_path / "b", "--parity-sentences", "0"], ["nowhere"]),
    "export-blockwise-kernel-with-portable-numerics": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", tmp_path / "b", "--profile", "android-app", "--int8-kernel", "blockwise"],
        ["portable numerics need", "dynamic"]),
    "export-blockwise-kernel-for-optimum-layout": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", tmp_path / "b", "--quantize", "int8", "--int8-kernel", "blockwise"],
        ["quantize.kernel", "onefile only"]),
    "export-output-vocabulary-for-optimum-layout": lambda tmp_path, ckpt, bundle: (
        ["export", ckpt, "--out", tmp_path / "b", "--output-vocabulary", "training-targets"],
        ["onefile.output_vocabulary", "onefile only"]),
}


def _touch(path):
    path.write_bytes(b"a user's file")
    return path


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _mkdir(path):
    path.mkdir()
    return path


def _users_report_dir(tmp_path):
    out = tmp_path / "quarterly"
    out.mkdir()
    (out / "report.md").write_text("# Q3 report\nthe user's own words\n")
    return out


def _m2m100(tmp_path):
    """A small M2M100 checkpoint with the real M2M100 tokenizer (hf_families.py)."""
    import hf_families
    from ekd_edge.data import load_corpus

    text = load_corpus("lo-help-en-de").split("train").head(400)
    return hf_families.build("m2m100", tmp_path / "m2m100", text.src, text.tgt)


def _corrupt_spm(tmp_path, ckpt):
    damaged = tmp_path / "damaged"
    shutil.copytree(ckpt, damaged)
    (damaged / "source.spm").write_bytes(b"\x0a\x05 a SentencePiece model cut short")
    return damaged


def _adopting_recipe(tmp_path, ckpt, stages, keep_vocab_size=False):
    """A trained teacher, then ``ckpt`` as "big", whose tokenizer the student adopts, trimmed to at most
    100 pieces (+ 3 specials)."""
    teachers = f'name = "t"\nsize = "nano"\nsteps = 2\n[[teacher]]\nname = "big"\ncheckpoint = "{ckpt}"'
    tokenizer = ('vocab_size = 120\n' if keep_vocab_size else '') + 'from = "big"\ntrim = true\nmax_pieces = 100'
    path = recipe(tmp_path, teacher=teachers, extra=stages)
    path.write_text(path.read_text().replace("vocab_size = 120", tokenizer, 1))
    return path


def _copy_init_recipe(tmp_path):
    # the teacher (nano: d_model 32) and a wider student cannot share weights
    text = recipe(tmp_path).read_text().replace('size = "nano"\nsteps_per_stage', 'size = "tiny"\nsteps_per_stage')
    path = tmp_path / "copy-init.toml"
    path.write_text(text + '\n[[stage]]\ninit = "copy:first"\n')
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_table(case, tmp_path, capsys, nano_checkpoint, fake_bundle):
    argv, needles = BAD_INPUTS[case](tmp_path, nano_checkpoint, fake_bundle)
    outside = tmp_path.parent / "x"
    fails_cleanly(capsys, tmp_path, argv, *needles)
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not outside.exists()   # nothing was created either


def test_invalid_utf8_on_stdin_names_the_line(tmp_path, nano_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "translate", str(nano_checkpoint)],
                          input=b"Hello\n\xff\xfe broken\n", capture_output=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().strip() == "error: <stdin>:2: invalid UTF-8 (byte 0xff at column 1)"


def test_a_full_disk_is_one_line_and_keeps_earlier_files(tmp_path, nano_checkpoint):
    """RLIMIT_FSIZE makes every write past 64 kB fail with EFBIG, as a full disk fails with ENOSPC."""
    import resource
    import signal

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "export", str(nano_checkpoint), "--out", str(out),
                           "--parity-sentences", "0"], capture_output=True, text=True, timeout=300,
                          preexec_fn=small_disk, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    # the destination given, not the hidden staging folder the file was being written in
    assert lines[-1].startswith(f"error: {out}: File too large") and "Traceback" not in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_internal_failure_is_one_line_with_a_log_of_the_traceback(tmp_path, capsys, monkeypatch):
    import ekd_edge.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setitem(cli.COMMANDS, "translate", broken)
    monkeypatch.setenv("EKD_EDGE_LOG_DIR", str(tmp_path / "logs"))
    assert main(["translate", str(tmp_path), "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ekd-edge failed unexpectedly (ZeroDivisionError")
    log = next((tmp_path / "logs").iterdir())
    assert str(log) in err and "Traceback" in log.read_text() and "a bug of ours" in log.read_text()
