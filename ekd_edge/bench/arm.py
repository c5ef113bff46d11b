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

from ekd_edge.errors import EkdError

EMULATED_LABEL = "emulated (qemu), not device time"
DEFAULT_ROOT = Path.home() / ".cache" / "ekd-edge" / "arm64-root"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOT_PYTHON = "3.11"  # bookworm's python3
WHEELS = ("onnxruntime==1.32.0", "numpy", "onnxruntime-extensions==0.15.2")  # extensions: the one-file model
SITE_PACKAGES = "/opt/ekd-edge/site-packages"
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


class ArmError(EkdError):
    """The aarch64 root or the emulator is missing or broken."""


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

    def is_ready(self) -> bool:
        return (self.python.exists() and (self.path / "proc" / "cpuinfo").is_file()
                and (self.path / SITE_PACKAGES.lstrip("/") / "onnxruntime").is_dir())

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
        """Build the root once (several minutes, some 100 MB of downloads); a ready root is kept
        (and given the wheels it lacks, e.g. onnxruntime-extensions in a root built before it was needed)."""
        if self.is_ready():
            if not (self.path / SITE_PACKAGES.lstrip("/") / "onnxruntime_extensions").is_dir():
                say("adding the aarch64 wheels the root lacks")
                self._install_wheels(self.path, pip)
            return self.path
        self.qemu = find_qemu(self.qemu)
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
        say("downloading aarch64 wheels")
        self._install_wheels(partial, pip)
        os.replace(partial, self.path)
        check = subprocess.run(self.run_command(["-c", "import onnxruntime, numpy; print(onnxruntime.__version__)"]),
                               env=self.run_env(), capture_output=True, text=True)
        if check.returncode != 0:
            raise ArmError(f"{self.path}: onnxruntime does not import under qemu: {check.stderr.strip()[-300:]}")
        return self.path

    def _install_wheels(self, root: Path, pip: str | None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            _run(self.wheel_download_command(Path(tmp), pip or f"{sys.executable} -m pip"))
            site = root / SITE_PACKAGES.lstrip("/")
            site.mkdir(parents=True, exist_ok=True)
            # a wheel is a zip of its installed files: unpacking it is installing it (no scripts needed)
            for wheel in sorted(Path(tmp).glob("*.whl")):
                with zipfile.ZipFile(wheel) as zf:
                    zf.extractall(site)

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
