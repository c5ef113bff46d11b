"""Export a checkpoint to a verified bundle (ONNX, CTranslate2) and translate with it.

Pruning (prune.py), the mobile .ort format (mobile.py), CTranslate2 (ct2.py) and export profiles
(profiles.py) are imported from their modules, so importing this package stays light.
"""

from ekd_edge.export.bundle import OnnxTranslator
from ekd_edge.export.manifest import MANIFEST_NAME, read_manifest, verify_bundle
from ekd_edge.export.onefile import OneFileTranslator, export_onefile, verify_onefile
from ekd_edge.export.onnx_export import QUANT_ARCHS, export_bundle
from ekd_edge.export.parity import check_parity_gate, token_agreement
from ekd_edge.export.quality_gate import enforce_quality, measure_quality

__all__ = [
    "MANIFEST_NAME",
    "QUANT_ARCHS",
    "OneFileTranslator",
    "OnnxTranslator",
    "check_parity_gate",
    "enforce_quality",
    "measure_quality",
    "export_bundle",
    "export_onefile",
    "read_manifest",
    "token_agreement",
    "verify_bundle",
    "verify_onefile",
]
