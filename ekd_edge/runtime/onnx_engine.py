"""An optimum-layout ONNX bundle run by onnxruntime through ``ORTModelForSeq2SeqLM``."""

from __future__ import annotations

import warnings
from pathlib import Path

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.errors import BundleError
from ekd_edge.runtime.base import GenerateTranslator
from ekd_edge.runtime.manifest import verify_bundle
from ekd_edge.runtime.session import optimization_level


class OnnxTranslator(GenerateTranslator):
    """An exported bundle run by onnxruntime (CPU) through optimum's ORTModelForSeq2SeqLM.

    The manifest is verified before any graph is loaded, so a tampered or incomplete bundle is
    refused up front rather than producing silently wrong translations. Decoding is the shared
    ``GenerateTranslator`` code, the very same as PyTorch's.
    """

    engine = "onnxruntime"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(bundle_dir)
        self.manifest = verify_bundle(self.path)
        self.variant = self.manifest.get("variant", "fp32")
        self.tokenizer = load_tokenizer(self.path)

        options = ort.SessionOptions()
        # portable bundles must not be fused back into per-architecture kernels (export/portable.py)
        options.graph_optimization_level = optimization_level(self.manifest.get("settings"))
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            from optimum.onnxruntime import ORTModelForSeq2SeqLM

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = ORTModelForSeq2SeqLM.from_pretrained(
                    str(self.path), provider="CPUExecutionProvider", session_options=options,
                    local_files_only=True, use_cache=True,
                )
        except BundleError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{self.path}: onnxruntime cannot load the bundle ({type(exc).__name__}: {detail})") from None
