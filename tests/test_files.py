"""Writing without losing anything: staging leftovers, the export destination rule, run locks,
atomic writes, and progress lines where no terminal watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ekd_edge.errors import BundleError, EkdError
from ekd_edge.export.destination import check_destination
from ekd_edge.files import RunLock, publish_dir, remove_stale_staging, staging_dir, write_text_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_processs_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    final = tmp_path / "bundle"
    dead = tmp_path / f".ekd-staging.bundle.{_dead_pid()}.abc"
    (dead / "bundle").mkdir(parents=True)
    (dead / "bundle" / "manifest.json").write_text("{}")
    alive = tmp_path / f".ekd-staging.bundle.{os.getppid()}.def"   # pytest's parent: certainly running
    alive.mkdir()
    other = tmp_path / f".ekd-staging.bundle-2.{_dead_pid()}.ghi"    # another destination's: not ours to judge
    other.mkdir()
    stage = staging_dir(final)
    assert not dead.exists() and alive.exists() and other.exists() and stage.is_dir()
    assert stage.name.startswith(f".ekd-staging.bundle.{os.getpid()}.")
    assert remove_stale_staging(final) == []    # our own stage is alive too


def test_destination_rule(tmp_path, nano_checkpoint):
    from ekd_edge.export import export_bundle

    check_destination(tmp_path / "new")               # missing: fine
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty")             # empty: fine
    bundle = tmp_path / "bundle"
    export_bundle(nano_checkpoint, bundle)
    check_destination(bundle)                         # an intact bundle of ours: may be replaced
    (bundle / "config.json").write_text("{}")         # edited by hand: no longer ours to replace
    with pytest.raises(BundleError, match="not an intact ekd-edge bundle"):
        check_destination(bundle)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty")
    with pytest.raises(BundleError, match="symbolic link"):
        check_destination(link)


def test_a_second_lock_on_a_directory_is_refused_until_released(tmp_path):
    stale = []
    first = RunLock(tmp_path, on_stale=stale.append).acquire()
    with pytest.raises(EkdError, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path, on_stale=stale.append):
        pass
    assert stale == []   # a cleanly released lock is not stale


def test_only_the_lock_holders_own_child_may_share_its_lock(tmp_path):
    """A second job (ladder.SecondJob) names its parent; anyone else naming it is still refused."""
    probe = ("import sys\nfrom ekd_edge.files import RunLock\nfrom ekd_edge.errors import EkdError\n"
             "try:\n    RunLock(sys.argv[1], delegate_of=int(sys.argv[2])).acquire()\nexcept EkdError:\n"
             "    sys.exit(3)\n")
    with RunLock(tmp_path):
        child = subprocess.run([sys.executable, "-c", probe, str(tmp_path), str(os.getpid())], timeout=60)
        stranger = subprocess.run([sys.executable, "-c", probe, str(tmp_path), str(os.getpid() + 1)], timeout=60)
        # a grandchild names the right pid, but the holder is not its parent
        grandchild = subprocess.run([sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run("
                                     "[sys.executable, '-c', sys.argv[1], sys.argv[2], sys.argv[3]]).returncode)",
                                     probe, str(tmp_path), str(os.getpid())], timeout=60)
    assert (child.returncode, stranger.returncode, grandchild.returncode) == (0, 3, 3)
    released = subprocess.run([sys.executable, "-c", probe, str(tmp_path), str(os.getpid())], timeout=60)
    assert released.returncode == 0   # nobody holds it: an ordinary acquisition


def test_a_lock_whose_holder_died_is_taken_over(tmp_path):
    pid = _dead_pid()
    (tmp_path / ".ekd-edge.lock").write_text(json.dumps({"pid": pid, "host": "here"}))
    stale = []
    with RunLock(tmp_path, on_stale=stale.append):
        assert json.loads((tmp_path / ".ekd-edge.lock").read_text())["pid"] == os.getpid()
    assert len(stale) == 1 and f"process {pid}, which no longer runs" in stale[0]


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "report.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second" and sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_training_without_a_terminal_prints_plain_progress_lines(tmp_path):
    """stderr is a pipe here, as under nohup or a cluster scheduler: progress must still appear."""
    code = """
import torch
from ekd_edge.distill import trainer
from ekd_edge.distill.batches import BatchStream, TokenizedPairs
from ekd_edge.distill.recipe import TrainingSettings
from ekd_edge.models import build_model
trainer.PLAIN_PROGRESS_EVERY_S = 0.0001
pairs = TokenizedPairs([[5, 6, 1]] * 8, [[7, 8, 1]] * 8)
model = build_model("nano", 20, seed=0)
trainer.train(model, BatchStream(pairs, 64, 0), 3, TrainingSettings(warmup_steps=1), description="teacher t")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "teacher t: step" in line]
    assert [line.split("step ")[1].split(" ")[0] for line in lines] == ["1/3", "2/3", "3/3"], proc.stderr


def test_every_long_job_without_a_terminal_prints_plain_progress_lines(tmp_path):
    """seq-KD decoding, cache builds and tokenising use the same bars: lines while they run and one
    at the end, with the count and the status, on stderr without a terminal and in the log file."""
    code = """
import time
from ekd_edge.console import log_to, progress_bar
with log_to(__import__("sys").argv[1]):
    with progress_bar(log_every=0.05) as bar:
        task = bar.add_task("seq-KD decoding", total=3, status="beam 4")
        for i in range(3):
            time.sleep(0.06)
            bar.update(task, completed=i + 1)
"""
    log = tmp_path / "run.log"
    proc = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "seq-KD decoding:" in line]
    counts = [line.split("decoding: ")[1].split(" ")[0] for line in lines]
    assert counts == ["1/3", "2/3", "3/3"] and all("beam 4" in line for line in lines), proc.stderr
    assert log.read_text().count("seq-KD decoding: 3/3") == 1


def test_the_second_of_two_identical_cache_builds_yields_to_the_first(tmp_path):
    """Runs sharing a cache directory may build one key at once: the loser's rename must not fail."""
    final = tmp_path / "cache" / "teacher-abc"
    final.parent.mkdir()
    first, second = staging_dir(final), staging_dir(final)
    (first / "values.npy").write_text("first")
    (second / "values.npy").write_text("second")
    assert publish_dir(first, final) is False
    assert publish_dir(second, final) is True
    assert (final / "values.npy").read_text() == "first" and not second.exists()
    with pytest.raises(OSError):   # anything else that stops the rename is still an error
        publish_dir(tmp_path / "missing", tmp_path / "cache" / "other")
