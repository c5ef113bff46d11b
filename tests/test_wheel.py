"""A built wheel works outside the source checkout: profiles, recipes and corpora are package data.

The wheel is installed into a fresh virtual environment that reuses the already installed
dependencies (a path entry to this environment's site-packages, without its editable-install
hooks), and `ekd-edge export --profile arm64` and `ekd-edge translate` run from a temporary
directory that holds no copy of the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(ROOT)], check=True, timeout=600)
    wheel = next((work / "dist").glob("ekd_edge-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies of this environment, as a plain path (its .pth hooks, e.g. the editable
    # install of ekd_edge, are not run from there)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=600)
    return venv


def test_wheel_exports_with_a_packaged_profile_and_translates_from_anywhere(wheel_env, sharp_checkpoint, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    cli = str(wheel_env / "bin" / "ekd-edge")
    where = subprocess.run([str(wheel_env / "bin" / "python"), "-c", "import ekd_edge; print(ekd_edge.__file__)"],
                           capture_output=True, text=True, cwd=outside, env=env, check=True).stdout.strip()
    assert str(wheel_env) in where, where   # the wheel's copy, not the checkout's
    export = subprocess.run([cli, "export", str(sharp_checkpoint), "--out", "bundle", "--profile", "arm64",
                             "--parity-sentences", "20", "--quality-sentences", "20", "--max-bleu-drop", "100"],
                            capture_output=True, text=True, cwd=outside, env=env, timeout=900)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (outside / "bundle" / "manifest.json").is_file()
    translate = subprocess.run([cli, "translate", "bundle", "Click OK."], capture_output=True, text=True,
                               cwd=outside, env=env, timeout=300)
    assert translate.returncode == 0 and translate.stdout.strip(), translate.stderr[-2000:]
    assert sorted(p.name for p in outside.iterdir()) == ["bundle"]
    shutil.rmtree(outside / "bundle")
