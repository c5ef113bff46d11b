"""Running an exported bundle on aarch64 under qemu user-mode emulation, on an x86 host.

The aarch64 root is built once and cached (default ``~/.cache/ekd-edge/arm64-root``):

1. ``debootstrap --arch=arm64 --foreign --variant=minbase`` downloads Debian's arm64 packages
   and unpacks the essential ones (no arm64 code runs yet);
2. the remaining base packages (python3.11 among them) are unpacked with ``dpkg-deb`` into the
   root, keeping its merged-/usr links; their maintainer scripts are not needed to run Python;
3. aarch64 wheels of onnxruntime and numpy (``pip download --platform manylinux_2_28_aarch64``)
   are unzipped into ``/opt/ekd-edge/site-packages`` of the root;
4. ``/proc/cpuinfo`` in the root gets the text of an ARM core: onnxruntime reads it at import to
   detect CPU features, and under qemu the host's x86 file makes ``import onnxruntime`` crash.

Programs then run as ``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3 …``: ``-L`` makes qemu
look up absolute paths (the dynamic loader, libraries, ``/proc/cpuinfo``) in ROOT first. No
binfmt_misc registration and no chroot are needed.

The root installs the onnxruntime and onnxruntime-extensions versions the Android app pins
(``APP_ONNXRUNTIME``/``APP_EXTENSIONS``, the versions in android_demo/app/build.gradle.kts; a
test fails when the two differ), so the aarch64 checks run the app's model with the app's
runtime. ``X86Env`` is the same runtime for x86-64 (a virtual environment, default
``~/.cache/ekd-edge/x86-app-runtime``), and ``X86Python`` runs a runner script with any x86
interpreter, natively or under ``qemu-x86_64-static -cpu Haswell``: an AVX2/FMA core without
AVX-512 or VNNI, whose int8 kernels onnxruntime picks by CPUID, so one host checks both x86
instruction sets. ``python -m ekd_edge.bench.arm ensure`` builds whatever is missing (``make
test`` calls it).

Times measured this way are of an emulator on the host's CPU: they say nothing about an ARM
device and are always labelled "emulated (qemu), not device time".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ekd_edge.errors import ArmError

EMULATED_LABEL = "emulated (qemu), not device time"
CACHE = Path.home() / ".cache" / "ekd-edge"
DEFAULT_ROOT = CACHE / "arm64-root"
DEFAULT_X86_ENV = CACHE / "x86-app-runtime"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOT_PYTHON = "3.11"  # bookworm's python3
# The runtime the Android app ships: com.microsoft.onnxruntime:onnxruntime-android and
# onnxruntime-extensions-android in android_demo/app/build.gradle.kts. The checks install exactly
# these versions (the PyPI wheels: the same onnxruntime releases, so the same model checker and
# CPU kernels, as the AARs); tests/test_android_contract.py fails when the Gradle file pins others.
APP_ONNXRUNTIME = "1.22.0"
APP_EXTENSIONS = "0.13.0"
# numpy: the version of constraints.txt, which onnxruntime 1.22's wheels work with
WHEELS = (f"onnxruntime=={APP_ONNXRUNTIME}", "numpy==2.4.6", f"onnxruntime-extensions=={APP_EXTENSIONS}")
SITE_PACKAGES = "/opt/ekd-edge/site-packages"
WHEELS_STAMP = "/opt/ekd-edge/wheels.txt"   # the wheel requirements installed in SITE_PACKAGES
APT_PACKAGES = ("qemu-user-static", "debootstrap")
# qemu-x86_64's model of an AVX2 core: AVX2 and FMA, no AVX-512, no VNNI (qemu 7.2's TCG runs it)
AVX2_CPU = "Haswell"
INSTALL_HINT = ("qemu-aarch64-static not found: install it with `apt-get install qemu-user-static debootstrap` "
                "(Debian/Ubuntu), or give its path with --qemu")

# a Cortex-A76-like core (asimddp: the dot-product instructions int8 kernels use)
FAKE_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


# qemu's default "max" core also emulates i8mm and SVE; with qemu 7.2 and onnxruntime 1.32 the int8
# kernels chosen for it produce wrong numbers (every sentence decodes to one repeated token), while
# fp32 is exact. A Neoverse-N1 (Cortex-A76 class: dot product, no i8mm, the core of most phones of
# 2019-2022) gives the int8 path that real devices of that class run. cortex-a72 is too old for
# this onnxruntime build (illegal instruction).


# The CPUs onnxruntime's cpuinfo library counts: without these files in the root, qemu's -L shows
# it the host's list (e.g. "0-1"), while the root's cpuinfo describes one core, and onnxruntime
# 1.22 then aborts at import (an index past the end of its per-core table).
CPU_LIST = "sys/devices/system/cpu/possible"


def _write_cpu_list(root: Path) -> None:
    cpu = root / CPU_LIST
    cpu.parent.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu.parent / name).write_text("0\n")


def find_qemu(explicit: str | None = None) -> str:
    """Path of qemu-aarch64-static (or qemu-aarch64), or an ArmError saying what to install."""
    for candidate in ([explicit] if explicit else ["qemu-aarch64-static", "qemu-aarch64"]):
        found = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if found:
            return found
    raise ArmError(INSTALL_HINT)


@dataclass
class ArmRoot:
    """An arm64 Debian root used through qemu's ``-L``."""

    path: Path = DEFAULT_ROOT
    qemu: str = "qemu-aarch64-static"
    # the emulated core: see EMULATED_CPU
    cpu: str = "neoverse-n1"
    suite: str = DEBIAN_SUITE
    mirror: str = DEBIAN_MIRROR
    wheels: tuple = WHEELS
    extra_env: dict = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.path / "usr" / "bin" / f"python{ROOT_PYTHON}"

    def has_base(self) -> bool:
        """The Debian part is there (python, the fake cpuinfo); the wheels may not be."""
        return self.python.exists() and (self.path / "proc" / "cpuinfo").is_file()

    def installed_wheels(self) -> list[str]:
        stamp = self.path / WHEELS_STAMP.lstrip("/")
        return stamp.read_text().split() if stamp.is_file() else []

    def is_ready(self) -> bool:
        """Built, with exactly ``wheels`` installed (a root with other versions is not ready)."""
        return (self.has_base() and (self.path / CPU_LIST).is_file()
                and (self.path / SITE_PACKAGES.lstrip("/") / "onnxruntime").is_dir()
                and self.installed_wheels() == list(self.wheels))

    # --- command construction (pure: tested without qemu) ---------------------------------------
    def debootstrap_command(self, target: Path) -> list[str]:
        return ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                f"--include=python3-minimal,libpython{ROOT_PYTHON}-stdlib", self.suite, str(target), self.mirror]

    def wheel_download_command(self, dest: Path, pip: str = "pip") -> list[str]:
        platforms = []
        for tag in ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"):
            platforms += ["--platform", tag]
        return [*pip.split(), "download", *platforms, "--only-binary=:all:", "--implementation", "cp",
                "--python-version", ROOT_PYTHON, "-d", str(dest), *self.wheels]

    def run_command(self, args: list[str]) -> list[str]:
        """The host command that runs ``python3 ARGS…`` inside the root."""
        return [self.qemu, "-cpu", self.cpu, "-L", str(self.path), str(self.python), *args]

    def run_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=str(self.path / SITE_PACKAGES.lstrip("/")), PYTHONNOUSERSITE="1",
                   OMP_NUM_THREADS="1", **self.extra_env)
        return env

    # --- building ---------------------------------------------------------------------------------
    def build(self, pip: str | None = None, say=print) -> Path:
        """Build the root once (several minutes, some 100 MB of downloads); a ready root is kept.
        A root whose wheels are not ``wheels`` (other versions, or built before the one-file
        runner needed onnxruntime-extensions) gets exactly ``wheels`` instead."""
        if self.is_ready():
            return self.path
        self.qemu = find_qemu(self.qemu)
        if not self.has_base():
            if not shutil.which("debootstrap"):
                raise ArmError("debootstrap not found: install it with `apt-get install debootstrap qemu-user-static`")
            partial = self.path.with_name(self.path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            say(f"debootstrap {self.suite} arm64 into {partial}")
            _run(self.debootstrap_command(partial))
            say("unpacking the base packages (python3)")
            _unpack_base(partial)
            # debootstrap links proc to the host's /proc; the root needs its own, holding only cpuinfo
            if (partial / "proc").is_symlink():
                (partial / "proc").unlink()
            (partial / "proc").mkdir(exist_ok=True)
            (partial / "proc" / "cpuinfo").write_text(FAKE_CPUINFO)
            if self.path.exists():   # a root too broken to keep (no python): replaced as a whole
                shutil.rmtree(self.path)
            os.replace(partial, self.path)
        _write_cpu_list(self.path)
        if (self.installed_wheels() != list(self.wheels)
                or not (self.path / SITE_PACKAGES.lstrip("/") / "onnxruntime").is_dir()):
            say(f"installing the aarch64 wheels {' '.join(self.wheels)} into {self.path}"
                + (f" (had: {' '.join(self.installed_wheels())})" if self.installed_wheels() else ""))
            self._install_wheels(self.path, pip)
        self._check_import()
        # written last: a root whose onnxruntime does not import is not ready
        (self.path / WHEELS_STAMP.lstrip("/")).write_text("\n".join(self.wheels) + "\n")
        return self.path

    def _check_import(self) -> None:
        check = subprocess.run(self.run_command(["-c", VERSIONS_SCRIPT]), env=self.run_env(),
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise ArmError(f"{self.path}: onnxruntime does not import under qemu: {check.stderr.strip()[-300:]}")

    def _install_wheels(self, root: Path, pip: str | None) -> None:
        site = root / SITE_PACKAGES.lstrip("/")
        (root / WHEELS_STAMP.lstrip("/")).unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            _run(self.wheel_download_command(Path(tmp), pip or f"{sys.executable} -m pip"))
            # a fresh directory: wheels of other versions must not leave files behind
            fresh = site.with_name(site.name + ".partial")
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
            # a wheel is a zip of its installed files: unpacking it is installing it (no scripts needed)
            for wheel in sorted(Path(tmp).glob("*.whl")):
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(fresh)
            shutil.rmtree(site, ignore_errors=True)
            os.replace(fresh, site)

    def versions(self, timeout: float | None = 300) -> dict:
        """The machine and the onnxruntime / onnxruntime-extensions versions Python imports in the root."""
        return json.loads(self.run_python(["-c", VERSIONS_SCRIPT], timeout=timeout).stdout)

    def run_python(self, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        if not self.is_ready():
            raise ArmError(f"{self.path}: no aarch64 root there; build it with "
                           "`python benchmarks/arm_agreement.py --build-root`")
        self.qemu = find_qemu(self.qemu)
        done = subprocess.run(self.run_command(args), env=self.run_env(), capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise ArmError(f"aarch64 run failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
        return done


# What a runtime imports: the versions the checks compare with the app's pins.
VERSIONS_SCRIPT = ("import json, platform, onnxruntime, onnxruntime_extensions; "
                   "print(json.dumps({'machine': platform.machine(), 'onnxruntime': onnxruntime.__version__, "
                   "'onnxruntime_extensions': onnxruntime_extensions.__version__}))")


@dataclass
class X86Python:
    """An x86-64 Python that runs the runner scripts: natively, or under ``qemu-x86_64-static -cpu
    CPU`` so that onnxruntime sees that CPU's CPUID and picks its kernels (``AVX2_CPU``: AVX2 only)."""

    python: str = sys.executable
    cpu: str | None = None
    qemu: str = "qemu-x86_64-static"

    def run_command(self, args: list[str]) -> list[str]:
        if self.cpu:
            return [self.qemu, "-cpu", self.cpu, self.python, *args]
        return [self.python, *args]

    def run_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
        return env

    def is_ready(self) -> bool:
        return os.path.isfile(self.python) and (not self.cpu or _which(self.qemu) is not None)

    def run_python(self, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        if self.cpu and _which(self.qemu) is None:
            raise ArmError(f"{self.qemu} not found: install it with `apt-get install qemu-user-static`")
        done = subprocess.run(self.run_command(args), env=self.run_env(), capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            where = f"under qemu -cpu {self.cpu}" if self.cpu else "natively"
            raise ArmError(f"x86 run {where} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
        return done

    def versions(self, timeout: float | None = 300) -> dict:
        return json.loads(self.run_python(["-c", VERSIONS_SCRIPT], timeout=timeout).stdout)


@dataclass
class X86Env:
    """A virtual environment with exactly ``wheels`` (the app's onnxruntime and extensions) for x86-64."""

    path: Path = DEFAULT_X86_ENV
    wheels: tuple = WHEELS

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def installed_wheels(self) -> list[str]:
        stamp = self.path / "wheels.txt"
        return stamp.read_text().split() if stamp.is_file() else []

    def is_ready(self) -> bool:
        return self.python.is_file() and self.installed_wheels() == list(self.wheels)

    def runner(self, cpu: str | None = None) -> X86Python:
        return X86Python(str(self.python), cpu=cpu)

    def build(self, base_python: str | None = None, say=print) -> Path:
        """Create the environment once (a minute, some 20 MB of wheels); a ready one is kept, one
        with other versions is made again."""
        if self.is_ready():
            return self.path
        say(f"creating {self.path} with {' '.join(self.wheels)}")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # from the base interpreter, so that none of this virtual environment's packages leak in
        base = base_python or getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", str(self.path)])
        _run([str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *self.wheels])
        check = subprocess.run([str(self.python), "-c", VERSIONS_SCRIPT], capture_output=True, text=True)
        if check.returncode != 0:
            raise ArmError(f"{self.path}: onnxruntime does not import: {check.stderr.strip()[-300:]}")
        # written last: an interrupted build is not ready and is made again
        (self.path / "wheels.txt").write_text("\n".join(self.wheels) + "\n")
        return self.path


def _which(program: str) -> str | None:
    return shutil.which(program) or (program if os.path.isfile(program) else None)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ArmError(f"`{' '.join(command[:3])} …` failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")


def _unpack_base(root: Path) -> None:
    """debootstrap's second stage without running arm64 code: unpack the base packages' files."""
    names = (root / "debootstrap" / "base").read_text().split()
    archives = root / "var" / "cache" / "apt" / "archives"
    for name in names:
        for deb in sorted(archives.glob(f"{name}_*.deb")):
            # --keep-directory-symlink: /lib, /bin are links into /usr on a merged-/usr system
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(root)], stdin=tar.stdout, check=True)
            tar.wait()


def greedy_ids(root: ArmRoot | None, bundle: Path, inputs: list, threads: int = 1,
               max_new_tokens: int = 128, timeout: float | None = None) -> dict:
    """Greedy decoding of ``inputs`` under qemu in ``root``, or natively when ``root`` is None.

    An optimum-layout bundle runs ``ort_greedy.py`` on token id lists; a one-file bundle
    (manifest backend "onefile") runs ``ort_onefile.py`` on the texts themselves.
    """
    onefile = json.loads((Path(bundle) / "manifest.json").read_text()).get("backend") == "onefile"
    script = Path(__file__).with_name("ort_onefile.py" if onefile else "ort_greedy.py")
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "inputs.json", Path(tmp) / "out.json"
        in_path.write_text(json.dumps(inputs, ensure_ascii=False))
        args = [str(script), str(Path(bundle).resolve()), str(in_path), str(out_path), str(threads),
                str(max_new_tokens)]
        if root is None:
            subprocess.run([sys.executable, *args], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           timeout=timeout)
        else:
            root.run_python(args, timeout=timeout)
        return json.loads(out_path.read_text())


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """Share of sentences whose token ids are identical, and the indices of those that differ."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outputs against {len(b)}")
    if not a:
        raise ValueError("no outputs to compare")
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if list(x) != list(y)]
    return {"n": len(a), "identical": len(a) - len(differ), "rate": (len(a) - len(differ)) / len(a),
            "differ": differ}


# --------------------------------------------------------------------------------------------
# `python -m ekd_edge.bench.arm ensure`: what the app-runtime checks need, built once and cached


def in_ci() -> bool:
    """True where the environment variable CI says so: there a missing runtime is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_programs() -> list[str]:
    return [p for p in ("qemu-aarch64-static", "qemu-x86_64-static", "debootstrap") if _which(p) is None]


def install_apt_packages(say=print) -> None:
    """``apt-get update`` once, then the Debian packages that provide qemu and debootstrap."""
    if missing_programs() == []:
        return
    if not shutil.which("apt-get"):
        raise ArmError(f"{', '.join(missing_programs())} missing and no apt-get here: {INSTALL_HINT}")
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        raise ArmError(f"{', '.join(missing_programs())} missing and not root (no sudo): {INSTALL_HINT}")
    say(f"installing {' '.join(APT_PACKAGES)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, "apt-get", "update", "-qq"],
                    [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ArmError(f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    if missing_programs():
        raise ArmError(f"still missing after apt-get: {', '.join(missing_programs())}")


def ensure(root: ArmRoot | None = None, env: X86Env | None = None, apt: bool = True, say=print) -> None:
    """The x86 app-runtime environment and the aarch64 root, built where missing (idempotent)."""
    if apt:
        install_apt_packages(say)
    (env or X86Env()).build(say=say)
    (root or ArmRoot()).build(say=say)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ekd_edge.bench.arm",
                                     description="Build the app-runtime environments the tests need (cached).")
    parser.add_argument("command", choices=["ensure", "status"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--x86-env", type=Path, default=DEFAULT_X86_ENV)
    parser.add_argument("--no-apt", action="store_true", help="never run apt-get")
    args = parser.parse_args(argv)
    root, env = ArmRoot(args.root), X86Env(args.x86_env)
    say = lambda message: print(f"[arm] {message}", flush=True)  # noqa: E731
    if args.command == "ensure":
        try:
            ensure(root, env, apt=not args.no_apt, say=say)
        except (ArmError, OSError, subprocess.SubprocessError) as exc:
            say(f"cannot build the app runtimes: {exc}")
            if in_ci():
                return 1
            say("not in CI (CI unset): the tests that need them will be skipped")
            return 0
    ready = {"x86 app runtime": env.is_ready(), "arm64 root": root.is_ready(), "programs missing": missing_programs()}
    say(f"{' '.join(WHEELS)}: x86 env {'ready' if ready['x86 app runtime'] else 'MISSING'} ({env.path}), "
        f"arm64 root {'ready' if ready['arm64 root'] else 'MISSING'} ({root.path})"
        + (f"; missing programs: {', '.join(ready['programs missing'])}" if ready["programs missing"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
