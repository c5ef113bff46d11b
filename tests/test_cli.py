"""The `ekd-edge` command as a user runs it: help texts, bench on the user's own files, translate,
and the whole demo pipeline on a nano recipe with the network blocked."""

import json
import subprocess
import sys

import pytest

from ekd_edge.cli import build_parser, main

NANO_RECIPE = """
name = "nano-demo"
seed = 2
[data]
corpus = "lo-help-en-de"
max_train_pairs = 400
max_length = 24
valid_sentences = 10
[tokenizer]
vocab_size = 200
[training]
batch_tokens = 512
lr = 5e-3
warmup_steps = 5
eval_max_new_tokens = 12
[[teacher]]
name = "t1"
size = "nano"
steps = 30
[[teacher]]
name = "t2"
size = {d_model = 48, encoder_layers = 1, decoder_layers = 1, attention_heads = 2, ffn_dim = 96}
steps = 30
[student]
size = {d_model = 16, encoder_layers = 1, decoder_layers = 1, attention_heads = 2, ffn_dim = 32}
steps_per_stage = 20
"""


@pytest.mark.parametrize("command", ["distill", "export", "bench", "translate", "demo"])
def test_every_subcommand_has_a_manual(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) > 5 and "usage: ekd-edge " + command in text


def test_bench_scores_the_users_own_files(tmp_path, nano_checkpoint, lo_valid, no_network):
    src, ref = tmp_path / "mine.en", tmp_path / "mine.de"
    src.write_text("\n".join(lo_valid.src[:12]) + "\n")
    ref.write_text("\n".join(lo_valid.tgt[:12]) + "\n")
    out = tmp_path / "report"
    assert main(["bench", str(nano_checkpoint), "--src", str(src), "--ref", str(ref), "--out", str(out),
                 "--latency-sentences", "3", "--no-memory"]) == 0
    report = json.loads((out / "report.json").read_text())
    (row,) = report["rows"]
    assert row["n_sentences"] == 12 and 0.0 <= row["bleu"] <= 100.0 and row["latency_p50_ms"] > 0
    assert report["signature"]["data"] == "mine.en" and report["signature"]["sentences"] == 12
    assert {"report.md", "report.png"} <= {p.name for p in out.iterdir()}


def test_bench_needs_both_src_and_ref(tmp_path, nano_checkpoint, capsys):
    (tmp_path / "a.en").write_text("x\n")
    assert main(["bench", str(nano_checkpoint), "--src", str(tmp_path / "a.en")]) == 2
    assert "--src and --ref go together" in capsys.readouterr().err


def test_translate_reads_arguments_and_stdin(nano_checkpoint, lo_valid):
    args = [sys.executable, "-m", "ekd_edge", "translate", str(nano_checkpoint)]
    by_arg = subprocess.run(args + lo_valid.src[:2], capture_output=True, text=True, timeout=120)
    by_stdin = subprocess.run(args, input="\n".join(lo_valid.src[:2]) + "\n", capture_output=True, text=True,
                              timeout=120)
    assert by_arg.returncode == 0 and by_stdin.returncode == 0, by_arg.stderr
    assert len(by_arg.stdout.splitlines()) == 2 and by_arg.stdout == by_stdin.stdout


def test_translate_of_a_missing_model_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "translate", str(tmp_path / "nope"), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_pipeline_end_to_end_offline(tmp_path, no_network):
    """distill (baseline in a second job) → paired comparison → shipped exports → benchmark → report."""
    from ekd_edge.pipeline import run_demo

    recipe = tmp_path / "nano.toml"
    recipe.write_text(NANO_RECIPE.replace("steps_per_stage = 20", 'steps_per_stage = 20\nbaselines = ["direct-kd"]'))
    run_dir = tmp_path / "run"
    result = run_demo(str(recipe), run_dir, latency_sentences=3, test_sentences=20, jobs=2)
    rows = result["rows"]
    assert [(r["name"], r["role"], r["variant"]) for r in rows] == [
        ("stage-2", "student", "pytorch"), ("stage-2", "student", "onefile-int8"),
        ("stage-2", "student", "onefile-int8-x86"), ("stage-2", "student", "ct2-int8")]
    for r in rows:
        assert r["n_sentences"] == 20 and r["peak_rss_mb"] > 0 and r["size_mb"] > 0
    # the ladder's own verdict: every model scored on the same sentences, p-values against the final stage
    report = json.loads((run_dir / "report" / "report.json").read_text())
    compared = {r["name"]: r for r in report["comparison"]["rows"]}
    assert set(compared) == {"t1", "t2", "ekd-stage-1", "ekd-stage-2", "direct-kd"}
    assert report["comparison"]["reference_system"] == "ekd-stage-2" and compared["ekd-stage-2"]["bleu_p"] is None
    assert 0 <= compared["direct-kd"]["bleu_p"] <= 1 and report["comparison"]["sentences"] == 20
    assert "| direct-kd | baseline |" in (run_dir / "report" / "report.md").read_text()
    # the pytorch row's BLEU is the comparison's BLEU of the same model on the same sentences
    assert rows[0]["bleu"] == pytest.approx(compared["ekd-stage-2"]["bleu"], abs=1e-6)
    # the examples are the models' real output: the saved checkpoint translates them the same way
    from ekd_edge.runtime.torch_engine import TorchTranslator

    examples = report["comparison"]["examples"]
    assert len(examples) == 8 and set(examples[0]["hyps"]) == set(compared)
    again = TorchTranslator(run_dir / "baselines" / "direct-kd").translate([e["src"] for e in examples],
                                                                          max_new_tokens=12)
    assert again == [e["hyps"]["direct-kd"] for e in examples]
    onefile = json.loads((run_dir / "exports" / "stage-2-onefile-int8" / "manifest.json").read_text())
    assert onefile["profile"]["name"] == "android-app" and onefile["languages"] == {"src": "en", "tgt": "de"}
    x86 = json.loads((run_dir / "exports" / "stage-2-onefile-int8-x86" / "manifest.json").read_text())
    assert x86["settings"]["int8_kernel"] == "blockwise" and x86["settings"]["numerics"] == "fast"
    assert rows[1]["params"] == rows[0]["params"]   # the one-file manifest records its source's size
    assert report["signature"]["threads"] == 1   # every engine timed on one thread
    phases = json.loads((run_dir / "demo.json").read_text())["phases"]
    assert set(phases) == {"distill_s", "compare_s", "export_s", "benchmark_s"}
    # a second run resumes: nothing is retrained or re-exported
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.safetensors")}
    stamps.update({p: p.stat().st_mtime_ns for p in run_dir.rglob("*.onnx")})
    run_demo(str(recipe), run_dir, latency_sentences=3, test_sentences=20, jobs=2)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_parser_defaults_are_sensible():
    from ekd_edge.export.profiles import profile_from_args

    args = build_parser().parse_args(["export", "ckpt", "--out", "b"])
    profile = profile_from_args(args)
    assert args.quantize is None and profile.gate.parity_sentences == 200 and profile.gate.parity_threshold == 0.99
    assert profile.corpus == "lo-help-en-de" and profile.gate.split == "valid"


def test_an_explicit_option_overrides_the_profile_even_when_it_equals_the_default(tmp_path):
    from ekd_edge.export.profiles import profile_from_args

    profile_file = tmp_path / "bible.toml"
    profile_file.write_text('corpus = "bible-en-es"\n[gate]\nparity_sentences = 50\n')
    args = build_parser().parse_args(["export", "ckpt", "--out", "b", "--profile", str(profile_file)])
    assert profile_from_args(args).corpus == "bible-en-es" and profile_from_args(args).gate.parity_sentences == 50
    args = build_parser().parse_args(["export", "ckpt", "--out", "b", "--profile", str(profile_file),
                                      "--corpus", "lo-help-en-de", "--parity-sentences", "200"])
    profile = profile_from_args(args)
    assert profile.corpus == "lo-help-en-de" and profile.gate.parity_sentences == 200


def test_bench_warns_when_the_model_translates_another_language_pair(tmp_path, nano_checkpoint, capsys):
    import shutil

    model = tmp_path / "en-de"
    shutil.copytree(nano_checkpoint, model)
    (model / "metrics.json").write_text(json.dumps({"languages": {"src": "en", "tgt": "de"}}))
    out = tmp_path / "report"
    args = ["--max-sentences", "3", "--latency-sentences", "1", "--no-memory", "--out"]
    assert main(["bench", str(model), "--corpus", "bible-en-es", *args, str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: {model}: translates en→de, but bible-en-es:test is en→es" in err
    assert main(["bench", str(model), "--corpus", "lo-help-en-de", *args, str(tmp_path / "r2")]) == 0
    assert "warning" not in capsys.readouterr().err
