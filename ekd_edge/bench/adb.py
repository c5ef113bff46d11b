"""Running an exported bundle on a real Android device over adb: push, run, pull the timings.

What the device needs: a Python with numpy and onnxruntime for aarch64, e.g. Termux
(``pkg install python python-numpy`` and an onnxruntime wheel built for Termux), reachable as
``--python`` (default ``/data/data/com.termux/files/usr/bin/python``). The runner pushes the
bundle's ONNX graphs and config.json plus ``ort_greedy.py`` and the token ids (tokenised on the
host, so the device needs no tokenizer) to ``--remote-dir``, runs the greedy loop there and
pulls back a JSON file with the generated ids and per-sentence seconds. Those are device times,
reported apart from any emulated (qemu) number.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ekd_edge.errors import AdbError

BUNDLE_FILES = ("config.json", "encoder_model.onnx", "decoder_model_merged.onnx")
DEVICE_LABEL = "device (adb)"


@dataclass
class AdbRunner:
    serial: str | None = None
    remote_dir: str = "/data/local/tmp/ekd-edge"
    python: str = "/data/data/com.termux/files/usr/bin/python"
    adb: str = "adb"

    def _base(self) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else [])]

    # --- command construction (pure: tested without a device) ------------------------------------
    def push_commands(self, bundle: Path, ids_file: Path, script: Path) -> list[list[str]]:
        remote_bundle = f"{self.remote_dir}/bundle"
        commands = [[*self._base(), "shell", "mkdir", "-p", remote_bundle]]
        commands += [[*self._base(), "push", str(Path(bundle) / name), f"{remote_bundle}/{name}"] for name in BUNDLE_FILES]
        commands.append([*self._base(), "push", str(script), f"{self.remote_dir}/ort_greedy.py"])
        commands.append([*self._base(), "push", str(ids_file), f"{self.remote_dir}/ids.json"])
        return commands

    def run_command(self, threads: int, max_new_tokens: int) -> list[str]:
        remote = self.remote_dir
        return [*self._base(), "shell", self.python, f"{remote}/ort_greedy.py", f"{remote}/bundle", f"{remote}/ids.json",
                f"{remote}/out.json", str(threads), str(max_new_tokens)]

    def pull_command(self, local: Path) -> list[str]:
        return [*self._base(), "pull", f"{self.remote_dir}/out.json", str(local)]

    def cleanup_command(self) -> list[str]:
        return [*self._base(), "shell", "rm", "-rf", self.remote_dir]

    # --- running ---------------------------------------------------------------------------------
    def check(self) -> None:
        if not shutil.which(self.adb):
            raise AdbError("adb not found: install Android platform-tools (`apt-get install adb`) and connect a device")
        devices = subprocess.run([*self._base(), "get-state"], capture_output=True, text=True)
        if devices.returncode != 0 or devices.stdout.strip() != "device":
            raise AdbError(f"no Android device ready ({(devices.stderr or devices.stdout).strip()}); "
                           "check `adb devices`")

    def greedy_ids(self, bundle: Path, id_lists: list[list[int]], threads: int = 1, max_new_tokens: int = 128) -> dict:
        """Run ``ort_greedy.py`` on the device; returns its JSON (ids, seconds) labelled as device time."""
        self.check()
        bundle = Path(bundle)
        missing = [name for name in BUNDLE_FILES if not (bundle / name).is_file()]
        if missing:
            raise AdbError(f"{bundle}: not an encoder/decoder bundle (missing {', '.join(missing)})")
        script = Path(__file__).with_name("ort_greedy.py")
        with tempfile.TemporaryDirectory() as tmp:
            ids_file, out_file = Path(tmp) / "ids.json", Path(tmp) / "out.json"
            ids_file.write_text(json.dumps(id_lists))
            for command in [*self.push_commands(bundle, ids_file, script), self.run_command(threads, max_new_tokens),
                            self.pull_command(out_file)]:
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise AdbError(f"`{' '.join(command[1:4])} …` failed on the device: "
                                   f"{(done.stderr or done.stdout).strip()[-300:]}")
            result = json.loads(out_file.read_text())
        subprocess.run(self.cleanup_command(), capture_output=True)
        result["latency_label"] = DEVICE_LABEL
        return result
