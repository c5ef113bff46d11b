"""Kill a distillation run with SIGKILL in the middle of a stage, resume it, and get the same weights.

Everything that the next step depends on is in the progress checkpoint (weights, AdamW moments,
step, RNG state); the learning rate and the batch order are functions of the step. On CPU with
one thread the arithmetic is the same sequence of operations, so the resumed student must equal
the uninterrupted one bit for bit: the test allows no tolerance.
"""

import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from ekd_edge.distill.checkpointing import ProgressFile
from ekd_edge.distill.ladder import run_recipe
from ekd_edge.distill.recipe import parse_recipe
from ekd_edge.errors import CheckpointError

RECIPE = """
name = "resume"
seed = 5
[data]
corpus = "lo-help-en-de"
max_train_pairs = 300
max_length = 24
valid_sentences = 4
[tokenizer]
vocab_size = 150
[training]
batch_tokens = 256
lr = 3e-3
warmup_steps = 3
dropout = 0.1
eval_max_new_tokens = 4
threads = 1
checkpoint_every = 7
[[teacher]]
name = "t"
size = "nano"
steps = 10
[student]
size = "nano"
steps_per_stage = 400
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cli(*args):
    return [sys.executable, "-m", "ekd_edge", "distill", *map(str, args)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run_recipe(parse_recipe(tomllib.loads(RECIPE), "resume.toml"), run_dir, RECIPE)
    return run_dir


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_gives_identical_weights(tmp_path, uninterrupted):
    recipe_file = tmp_path / "resume.toml"
    recipe_file.write_text(RECIPE)
    run_dir = tmp_path / "run"
    progress = run_dir / "students" / "stage-1.progress.pt"
    proc = subprocess.Popen(cli(recipe_file, "--run-dir", run_dir), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    # Killed mid-stage: the teacher is finished, stage 1 has progress but no final checkpoint.
    assert (run_dir / "teachers" / "t" / "metrics.json").is_file()
    assert progress.is_file() and not (run_dir / "students" / "stage-1" / "metrics.json").exists()
    saved_step = torch.load(progress, weights_only=True)["step"]
    assert 0 < saved_step < 400
    teacher_weights = run_dir / "teachers" / "t" / "model.safetensors"
    teacher_stamp = teacher_weights.stat().st_mtime_ns

    resumed = subprocess.run(cli(recipe_file, "--run-dir", run_dir, "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at step {saved_step}/400" in resumed.stderr
    assert teacher_weights.stat().st_mtime_ns == teacher_stamp  # a finished model is never redone
    assert not progress.exists()  # removed once the stage's checkpoint is written

    got = load_file(run_dir / "students" / "stage-1" / "model.safetensors")
    want = load_file(uninterrupted / "students" / "stage-1" / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_resume_without_a_run_is_an_error(tmp_path):
    recipe_file = tmp_path / "resume.toml"
    recipe_file.write_text(RECIPE)
    from ekd_edge.cli import main

    assert main(["distill", str(recipe_file), "--run-dir", str(tmp_path / "nothing"), "--resume"]) == 2
    assert not (tmp_path / "nothing").exists()


def test_progress_file_roundtrip_and_checks(tmp_path):
    progress = ProgressFile.for_model(tmp_path / "students" / "stage-2", "student", 50)
    assert progress.path.name == "stage-2.progress.pt" and progress.load() is None
    progress.save({"model": {"w": torch.arange(3.0)}, "step": 20, "rng": [torch.get_rng_state()]})
    state = progress.load()
    assert state["step"] == 20 and torch.equal(state["model"]["w"], torch.arange(3.0))
    assert [p.name for p in progress.path.parent.iterdir()] == ["stage-2.progress.pt"]  # no temp file left
    with pytest.raises(CheckpointError, match="belongs to total_steps 50, not 60"):
        ProgressFile(progress.path, "student", "stage-2", 60).load()
    progress.path.write_bytes(progress.path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"stage-2\.progress\.pt: corrupt progress checkpoint"):
        progress.load()


def _start_and_wait_for_progress(recipe_file, run_dir, progress):
    proc = subprocess.Popen(cli(recipe_file, "--run-dir", run_dir), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert progress.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no progress"
    return proc


def test_a_second_process_on_a_run_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path, capsys):
    from ekd_edge.cli import main

    recipe_file = tmp_path / "resume.toml"
    recipe_file.write_text(RECIPE.replace("steps_per_stage = 400", "steps_per_stage = 100000"))
    run_dir = tmp_path / "run"
    progress = run_dir / "students" / "stage-1.progress.pt"
    first = _start_and_wait_for_progress(recipe_file, run_dir, progress)
    try:
        capsys.readouterr()
        assert main(["distill", str(recipe_file), "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"in use by process {first.pid}" in err, err
        assert first.poll() is None   # the refused second process did not disturb the first
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    saved_step = torch.load(progress, weights_only=True)["step"]

    # The next run finds the dead process's lock, takes it over and resumes where it stopped.
    third = subprocess.Popen(cli(recipe_file, "--run-dir", run_dir), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in third.stderr:
            seen.append(line)
            if "resuming at step" in line:
                break
    finally:
        third.send_signal(signal.SIGKILL)
        third.wait()
    log = " ".join(" ".join(seen).split())
    assert f"lock left by process {first.pid}, which no longer runs; taken over" in log, log[-2000:]
    assert f"resuming at step {saved_step}/100000" in log, log[-2000:]


def test_a_changed_corpus_file_is_refused_on_resume(tmp_path):
    from ekd_edge.data import load_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lo = load_corpus("lo-help-en-de")
    for split in ("train", "valid"):
        text = lo.split(split).head(300)
        (corpus / f"{split}.en").write_text("\n".join(text.src) + "\n")
        (corpus / f"{split}.de").write_text("\n".join(text.tgt) + "\n")
    recipe_text = RECIPE.replace('corpus = "lo-help-en-de"', f'corpus = "{corpus}"\nsrc_lang = "en"\ntgt_lang = "de"')
    recipe_file = tmp_path / "resume.toml"
    recipe_file.write_text(recipe_text)
    run_dir = tmp_path / "run"
    first = _start_and_wait_for_progress(recipe_file, run_dir, run_dir / "students" / "stage-1.progress.pt")
    first.send_signal(signal.SIGKILL)
    first.wait()

    # Same number of lines, different (misaligned) content: a silent resume would train on garbage.
    lines = (corpus / "train.de").read_text().splitlines()
    (corpus / "train.de").write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    resumed = subprocess.run(cli(recipe_file, "--run-dir", run_dir), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 2
    last = resumed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{corpus / 'train.de'}: changed since this run started" in last, last
    assert "Traceback" not in resumed.stderr
    bookkeeping = (".ekd-edge.lock", "distill.log")   # the lock, and the log that records the refusal
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name not in bookkeeping} == \
        {p: b for p, b in before.items() if p.name not in bookkeeping}
