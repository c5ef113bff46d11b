"""What ekd-edge writes gets the modes the user's umask gives, as files made by any other program do:
staging folders and temporary files are private only while they are built."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from conftest import tiny_recipe
from ekd_edge.cli import main
from ekd_edge.distill.checkpointing import ProgressFile
from ekd_edge.files import write_json_atomic

UMASK = 0o027   # not the usual 022, so that a hard-coded 0644 fails as well as mkstemp's 0600

RECIPE = tiny_recipe("modes", '[[teacher]]\nname = "t"\nsize = "nano"\nsteps = 2\n', pairs=100,
                     head="teachers_only = true\n")


@pytest.fixture
def umask():
    before = os.umask(UMASK)
    yield UMASK
    os.umask(before)


def modes(root):
    """{path relative to root: permission bits} of everything under ``root``, root included."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_a_runs_files_and_folders_follow_the_umask(tmp_path, umask):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    run = tmp_path / "run"
    assert main(["distill", str(path), "--run-dir", str(run)]) == 0
    found = modes(run)
    for name in ("recipe.toml", "identity.json", "run.json", "distill.log", "tokenizer/vocab.json",
                 "teachers/t/model.safetensors", "teachers/t/metrics.json"):
        assert found.pop(name) == 0o666 & ~umask, name
    caches = [name for name in found if name.startswith("cache/")]
    assert any((run / name).is_dir() for name in caches) and any((run / name).is_file() for name in caches)
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o777 if (run / name).is_dir() else 0o666) & ~umask}
    assert not wrong


def test_progress_files_and_reports_follow_the_umask(tmp_path, umask):
    progress = ProgressFile.for_model(tmp_path / "students" / "stage-1", "student", 4)
    progress.save({"step": 1, "weights": torch.zeros(3)})
    report = write_json_atomic(tmp_path / "report" / "report.json", {"bleu": 1.0})
    assert stat.S_IMODE(progress.path.stat().st_mode) == 0o666 & ~umask == stat.S_IMODE(report.stat().st_mode)
