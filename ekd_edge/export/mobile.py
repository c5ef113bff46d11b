"""Mobile format: ORT-format graphs (.ort) and the operator list for a reduced onnxruntime build.

The .ort files sit next to the .onnx ones in the bundle (same stem), together with
``required_operators.config``, the file a minimal onnxruntime build takes as
``--include_ops_by_config``. Each .ort graph is loaded by onnxruntime before it is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ekd_edge.errors import BundleError

REQUIRED_OPERATORS_FILE = "required_operators.config"
TARGET_PLATFORMS = ("arm", "amd64")


def convert_to_ort(bundle_dir: str | Path, scratch: str | Path, target_platform: str = "arm",
                   portable: bool = False) -> dict:
    """Add ``<graph>.ort`` for every ``<graph>.onnx`` in ``bundle_dir`` and the required-operators config.

    ``portable`` graphs are converted with the "Runtime" style, which applies only basic
    optimisations: "Fixed" would bake in the fused per-architecture kernels portable numerics avoid.
    """
    import onnxruntime as ort

    if target_platform not in TARGET_PLATFORMS:
        raise BundleError(f"unknown ORT target platform {target_platform!r} (supported: {', '.join(TARGET_PLATFORMS)})")
    bundle_dir, scratch = Path(bundle_dir), Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    graphs = sorted(p for p in bundle_dir.glob("*.onnx"))
    for graph in graphs:
        os.link(graph, scratch / graph.name) if _same_device(graph, scratch) else _copy(graph, scratch / graph.name)
    # The converter is a script with its own argument parsing; a subprocess keeps its logging out of ours.
    command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(scratch),
               "--optimization_style", "Runtime" if portable else "Fixed", "--target_platform", target_platform]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise BundleError(f"{bundle_dir}: .ort conversion failed ({tail})")
    operators = scratch / REQUIRED_OPERATORS_FILE
    if not operators.is_file():
        candidates = sorted(scratch.glob("*required_operators*.config"))
        if not candidates:
            raise BundleError(f"{bundle_dir}: .ort conversion wrote no {REQUIRED_OPERATORS_FILE}")
        operators = candidates[0]
    converted = []
    for graph in graphs:
        ort_file = scratch / f"{graph.stem}{'.with_runtime_opt' if portable else ''}.ort"
        if not ort_file.is_file():
            raise BundleError(f"{bundle_dir}: .ort conversion produced no {ort_file.name}")
        try:
            ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"])
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{ort_file.name}: onnxruntime cannot load the ORT-format graph ({detail})") from None
        os.replace(ort_file, bundle_dir / f"{graph.stem}.ort")
        converted.append(f"{graph.stem}.ort")
    os.replace(operators, bundle_dir / REQUIRED_OPERATORS_FILE)
    ops = [line for line in (bundle_dir / REQUIRED_OPERATORS_FILE).read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    return {"ort_files": converted, "optimization_style": "Runtime" if portable else "Fixed",
            "required_operators": REQUIRED_OPERATORS_FILE, "operator_sets": ops,
            "target_platform": target_platform, "loaded": True}


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)
