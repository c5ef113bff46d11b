"""The aarch64 (qemu) and Android (adb) runners: command construction, error messages, agreement."""

import json
import shutil

import pytest

from conftest import needs
from ekd_edge.bench.adb import BUNDLE_FILES, AdbRunner
from ekd_edge.errors import AdbError
from ekd_edge.bench.arm import (APP_EXTENSIONS, APP_ONNXRUNTIME, CPU_LIST, EMULATED_LABEL, FAKE_CPUINFO,
                                SITE_PACKAGES, WHEELS, WHEELS_STAMP, ArmError, ArmRoot, X86Env, X86Python,
                                agreement, find_qemu, in_ci)


def test_qemu_command_runs_the_roots_python(tmp_path):
    root = ArmRoot(tmp_path / "root", qemu="/usr/bin/qemu-aarch64-static")
    command = root.run_command(["script.py", "a"])
    assert command == ["/usr/bin/qemu-aarch64-static", "-cpu", "neoverse-n1", "-L", str(tmp_path / "root"),
                       str(tmp_path / "root/usr/bin/python3.11"), "script.py", "a"]
    env = root.run_env()
    assert env["PYTHONPATH"] == str(tmp_path / "root" / SITE_PACKAGES.lstrip("/"))
    assert env["OMP_NUM_THREADS"] == "1"


def test_root_build_commands(tmp_path):
    root = ArmRoot(tmp_path / "root")
    deb = root.debootstrap_command(tmp_path / "partial")
    assert deb[:4] == ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase"]
    assert deb[-2:] == [str(tmp_path / "partial"), "http://deb.debian.org/debian"]
    pip = root.wheel_download_command(tmp_path / "w", pip="python -m pip")
    assert pip[:3] == ["python", "-m", "pip"] and "download" in pip
    assert "manylinux_2_28_aarch64" in pip and "--only-binary=:all:" in pip
    assert pip[pip.index("--python-version") + 1] == "3.11"
    # the Android app's runtime, exactly (tests/test_android_contract.py ties it to the Gradle file)
    assert f"onnxruntime=={APP_ONNXRUNTIME}" in pip and f"onnxruntime-extensions=={APP_EXTENSIONS}" in pip


def _fake_root(path, wheels=WHEELS):
    (path / "usr/bin").mkdir(parents=True)
    (path / "usr/bin/python3.11").write_text("")
    (path / "proc").mkdir()
    (path / "proc/cpuinfo").write_text(FAKE_CPUINFO)
    (path / CPU_LIST).parent.mkdir(parents=True)
    (path / CPU_LIST).write_text("0\n")
    (path / SITE_PACKAGES.lstrip("/") / "onnxruntime").mkdir(parents=True)
    (path / WHEELS_STAMP.lstrip("/")).write_text("\n".join(wheels) + "\n")
    return path


def test_a_root_with_other_wheels_is_not_ready(tmp_path):
    assert ArmRoot(_fake_root(tmp_path / "ok")).is_ready()
    old = ArmRoot(_fake_root(tmp_path / "old", wheels=("onnxruntime==1.32.0", "numpy", "onnxruntime-extensions==0.15.2")))
    assert old.has_base() and not old.is_ready()
    no_cpu_list = _fake_root(tmp_path / "no-cpu-list")
    (no_cpu_list / CPU_LIST).unlink()
    assert not ArmRoot(no_cpu_list).is_ready()


def test_x86_runners(tmp_path):
    assert X86Python("/opt/py/bin/python").run_command(["s.py", "1"]) == ["/opt/py/bin/python", "s.py", "1"]
    emulated = X86Python("/opt/py/bin/python", cpu="Haswell", qemu="/usr/bin/qemu-x86_64-static")
    assert emulated.run_command(["s.py"]) == ["/usr/bin/qemu-x86_64-static", "-cpu", "Haswell",
                                              "/opt/py/bin/python", "s.py"]
    assert emulated.run_env()["OMP_NUM_THREADS"] == "1"
    env = X86Env(tmp_path / "env")
    assert not env.is_ready()
    (tmp_path / "env/bin").mkdir(parents=True)
    (tmp_path / "env/bin/python").write_text("")
    (tmp_path / "env/wheels.txt").write_text("onnxruntime==1.32.0\n")
    assert not env.is_ready()
    (tmp_path / "env/wheels.txt").write_text("\n".join(WHEELS))
    assert env.is_ready() and env.runner("Haswell").run_command([])[:3] == ["qemu-x86_64-static", "-cpu", "Haswell"]


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("", False), ("false", False),
                                             ("0", False), (None, False)])
def test_ci_is_read_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_fake_cpuinfo_describes_an_arm_core():
    fields = dict(line.split(":", 1) for line in FAKE_CPUINFO.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["CPU implementer"] == "0x41"  # Arm Ltd.
    assert "asimd" in fields["Features"].split()


def test_missing_qemu_says_what_to_install(tmp_path):
    with pytest.raises(ArmError) as info:
        find_qemu(str(tmp_path / "no-such-qemu"))
    assert "apt-get install qemu-user-static" in str(info.value)


def test_unbuilt_root_is_refused_with_the_build_command(tmp_path):
    root = ArmRoot(tmp_path / "empty")
    assert not root.is_ready()
    with pytest.raises(ArmError, match="--build-root"):
        root.run_python(["-c", "pass"])


def test_emulated_label_says_so():
    assert "emulated" in EMULATED_LABEL and "not device time" in EMULATED_LABEL


def test_agreement_counts_identical_sentences():
    a = [[1, 2, 3], [4], [], [5, 6]]
    b = [[1, 2, 3], [4, 7], [], [6, 5]]
    r = agreement(a, b)
    assert r == {"n": 4, "identical": 2, "rate": 0.5, "differ": [1, 3]}
    with pytest.raises(ValueError):
        agreement(a, b[:3])


def test_adb_commands(tmp_path):
    runner = AdbRunner(serial="emulator-5554", remote_dir="/data/local/tmp/x", python="/usr/bin/python3")
    pushes = runner.push_commands(tmp_path / "bundle", tmp_path / "ids.json", tmp_path / "ort_greedy.py")
    assert pushes[0] == ["adb", "-s", "emulator-5554", "shell", "mkdir", "-p", "/data/local/tmp/x/bundle"]
    pushed = [c[-1] for c in pushes[1:]]
    assert pushed == [f"/data/local/tmp/x/bundle/{n}" for n in BUNDLE_FILES] + [
        "/data/local/tmp/x/ort_greedy.py", "/data/local/tmp/x/ids.json"]
    assert runner.run_command(2, 64) == ["adb", "-s", "emulator-5554", "shell", "/usr/bin/python3",
                                         "/data/local/tmp/x/ort_greedy.py", "/data/local/tmp/x/bundle",
                                         "/data/local/tmp/x/ids.json", "/data/local/tmp/x/out.json", "2", "64"]
    assert runner.pull_command(tmp_path / "o.json") == ["adb", "-s", "emulator-5554", "pull",
                                                        "/data/local/tmp/x/out.json", str(tmp_path / "o.json")]
    assert AdbRunner().run_command(1, 8)[:2] == ["adb", "shell"]


def test_adb_missing_is_a_clear_error(tmp_path):
    runner = AdbRunner(adb=str(tmp_path / "no-adb"))
    with pytest.raises(AdbError, match="platform-tools"):
        runner.greedy_ids(tmp_path, [[1, 2]])


def test_roots_python_is_aarch64_with_the_apps_onnxruntime():
    if not ArmRoot().is_ready() or shutil.which("qemu-aarch64-static") is None:
        needs(False, "needs the cached aarch64 root (`python -m ekd_edge.bench.arm ensure`, run by `make test`)")
    done = ArmRoot().run_python(["-c", "import json, platform, onnxruntime, onnxruntime_extensions; "
                                       "print(json.dumps([platform.machine(), onnxruntime.__version__, "
                                       "onnxruntime_extensions.__version__]))"])
    assert json.loads(done.stdout) == ["aarch64", APP_ONNXRUNTIME, APP_EXTENSIONS]


def test_plain_onnxruntime_loop_matches_the_bundle_translator(tmp_path, nano_checkpoint, lo_valid):
    """ort_greedy.py (what runs under qemu or on a device) decodes what OnnxTranslator decodes."""
    from ekd_edge.bench.arm import greedy_ids
    from ekd_edge.export import export_bundle
    from ekd_edge.runtime.onnx_engine import OnnxTranslator

    bundle = tmp_path / "bundle"
    export_bundle(nano_checkpoint, bundle, parity_texts=None)
    translator = OnnxTranslator(bundle, threads=1)
    texts = lo_valid.src[:12]
    expected = [translator.generate_ids([t], 24)[0] for t in texts]
    ids = [translator.tokenizer(t)["input_ids"] for t in texts]
    result = greedy_ids(None, bundle, ids, threads=1, max_new_tokens=24)
    assert result["ids"] == expected
    assert len(result["seconds"]) == len(texts) and result["machine"]
    assert len({tuple(e) for e in expected}) > 1  # the outputs depend on the input


@pytest.mark.parametrize("ci, status", [("true", 1), ("", 0)])
def test_ensure_fails_in_ci_only(monkeypatch, tmp_path, capsys, ci, status):
    """`make test` stops when the app runtimes cannot be built in CI; elsewhere their tests skip."""
    import ekd_edge.bench.arm as arm

    def broken(*args, **kwargs):
        raise ArmError("no network")

    monkeypatch.setattr(arm, "ensure", broken)
    monkeypatch.setenv("CI", ci)
    assert arm.main(["ensure", "--root", str(tmp_path / "r"), "--x86-env", str(tmp_path / "e")]) == status
    assert "no network" in capsys.readouterr().out
