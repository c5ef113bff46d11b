"""Export a checkpoint to a verified ONNX bundle and translate with it through onnxruntime."""

from ekd_edge.export.bundle import OnnxTranslator
from ekd_edge.export.manifest import MANIFEST_NAME, read_manifest, verify_bundle
from ekd_edge.export.onnx_export import QUANT_ARCHS, export_bundle
from ekd_edge.export.parity import check_parity_gate, token_agreement

__all__ = [
    "MANIFEST_NAME",
    "QUANT_ARCHS",
    "OnnxTranslator",
    "check_parity_gate",
    "export_bundle",
    "read_manifest",
    "token_agreement",
    "verify_bundle",
]
