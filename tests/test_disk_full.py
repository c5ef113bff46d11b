"""A full disk, met by every writer: one line naming the destination the user gave, exit status 2,
and the last good state kept. The disks are real: small tmpfs file systems (mount needs root, as in
CI; elsewhere these tests are skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_recipe
from ekd_edge.errors import DiskError
from ekd_edge.files import write_bytes_atomic


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(name, size): a directory under tmp_path that is a tmpfs of ``size`` ("3m", "512k")."""
    mounted = []

    def mount(name: str, size: str):
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a small file system here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def hidden(root):
    """Staging folders and temporary files left anywhere under ``root``."""
    return [p for p in root.rglob(".*") if p.name != ".ekd-edge.lock"]


RECIPE = tiny_recipe("full-disk", '[[teacher]]\nname = "t"\nsize = "tiny"\nsteps = 3\n[student]\nsize = "nano"\n'
                     'steps_per_stage = 2\n', training="checkpoint_every = 1\n")


def test_a_full_disk_while_training_names_the_progress_file_and_exits_2(tmp_path, small_disk):
    """The run directory fits its tokenizer and caches, not the teacher's first progress checkpoint
    (a "tiny" teacher's weights and optimizer moments: about 8 MB)."""
    run = small_disk("run", "3m")
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "distill", str(path), "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "EKD_EDGE_LOG_DIR": str(logs)})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {run / 'teachers' / 't.progress.pt'}: No space left on device"), last
    assert "Traceback" not in proc.stderr and not logs.exists()   # no crash log: the user's problem, said so
    assert not hidden(run) and not (run / "teachers" / "t.progress.pt").exists()
    assert (run / "tokenizer" / "vocab.json").is_file() and (run / "recipe.toml").read_text() == RECIPE


def test_progress_checkpoints_keep_the_last_good_one_on_a_full_disk(small_disk):
    from ekd_edge.distill.checkpointing import ProgressFile

    disk = small_disk("disk", "512k")
    progress = ProgressFile.for_model(disk / "teachers" / "t", "teacher", 10)
    progress.save({"step": 1, "weights": torch.ones(25_000)})          # 100 kB: fits
    with pytest.raises(DiskError) as err:
        progress.save({"step": 2, "weights": torch.ones(120_000)})     # 480 kB fits alone, not beside it
    assert str(err.value).startswith(f"{progress.path}: No space left on device")
    state = progress.load()
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(25_000))
    assert not hidden(disk)


def test_atomic_files_and_checkpoints_keep_what_was_there_on_a_full_disk(small_disk):
    from ekd_edge.models import build_model, save_model

    disk = small_disk("disk", "256k")
    report = write_bytes_atomic(disk / "report.json", json.dumps({"bleu": 1.0}).encode())
    with pytest.raises(DiskError, match=f"^{report}: No space left on device"):
        write_bytes_atomic(report, b"x" * 300_000)
    assert json.loads(report.read_text()) == {"bleu": 1.0}

    model = build_model("nano", vocab_size=400, seed=0)   # about 150 kB of weights: fit once, not twice
    out = save_model(model, disk / "stage-1", extra={"steps": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DiskError) as err:
        save_model(model, out, extra={"steps": 2})
    assert str(err.value).startswith(f"{out}: No space left on device")   # not its hidden staging folder
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and not hidden(disk)
