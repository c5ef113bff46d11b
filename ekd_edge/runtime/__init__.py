"""Running a model: one ``Translator`` interface and one registry for every engine.

    from ekd_edge.runtime import load_translator
    translator = load_translator("bundles/s2-int8")      # or a checkpoint directory
    translator.translate(["Select the cell range."])

| engine                | what it loads                                           | module            |
|-----------------------|---------------------------------------------------------|-------------------|
| pytorch               | a checkpoint directory (model.safetensors + config.json) | torch_engine.py   |
| onnxruntime           | an optimum-layout ONNX bundle (backend "onnx")           | onnx_engine.py    |
| onnxruntime-onefile   | a one-file string-to-string model (backend "onefile")    | onefile_engine.py |
| ctranslate2           | a CTranslate2 bundle (backend "ct2")                     | ct2_engine.py     |
| onnxruntime-web       | a web bundle run by Node (backend "web")                 | web_engine.py     |

A bundle's manifest is verified (runtime/manifest.py) before any of its files is loaded. This
package depends on data/ and models/ only: training, export and benchmarking build on it.
"""

from __future__ import annotations

from pathlib import Path

from ekd_edge.errors import CheckpointError
from ekd_edge.runtime.base import Translator, over_long_inputs, strip_special
from ekd_edge.runtime.manifest import MANIFEST_NAME, read_manifest

# manifest "backend" -> engine name; a checkpoint directory is "pytorch"
BACKEND_ENGINES = {"onnx": "onnxruntime", "onefile": "onnxruntime-onefile", "ct2": "ctranslate2",
                   "web": "onnxruntime-web"}
ENGINES = ("pytorch", "onnxruntime", "onnxruntime-onefile", "ctranslate2", "onnxruntime-web")


def engine_of(path: str | Path) -> str:
    """Which engine runs the model at ``path``, from what the directory holds."""
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        backend = read_manifest(path).get("backend", "onnx")
        if backend not in BACKEND_ENGINES:
            raise CheckpointError(f"{path / MANIFEST_NAME}: unknown backend {backend!r} "
                                  f"(supported: {', '.join(BACKEND_ENGINES)})")
        return BACKEND_ENGINES[backend]
    if (path / "config.json").is_file():
        return "pytorch"
    raise CheckpointError(f"{path}: neither an exported bundle (manifest.json) nor a checkpoint (config.json)")


def load_translator(path: str | Path, threads: int | None = None, engine: str | None = None) -> Translator:
    """The translator for a checkpoint or bundle directory (``engine`` forces one of ENGINES)."""
    engine = engine or engine_of(path)
    if engine == "pytorch":
        from ekd_edge.runtime.torch_engine import TorchTranslator as cls
    elif engine == "onnxruntime":
        from ekd_edge.runtime.onnx_engine import OnnxTranslator as cls
    elif engine == "onnxruntime-onefile":
        from ekd_edge.runtime.onefile_engine import OneFileTranslator as cls
    elif engine == "ctranslate2":
        from ekd_edge.runtime.ct2_engine import Ct2Translator as cls
    elif engine == "onnxruntime-web":
        from ekd_edge.runtime.web_engine import WebTranslator as cls
    else:
        raise CheckpointError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
    return cls(path, threads=threads)


__all__ = ["ENGINES", "Translator", "engine_of", "load_translator", "over_long_inputs", "strip_special"]
