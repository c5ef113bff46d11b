"""Checkpoint -> verified bundle, in three formats that share one skeleton (staging.py):

    onnx_export.export_bundle   optimum's encoder/decoder layout, fp32 or int8 (+ .ort, portable numerics)
    onefile.export_onefile      one model.onnx taking and returning strings (the Android app's model)
    ct2.export_ct2_bundle       CTranslate2

Every export checks its destination (destination.py), builds in a hidden staging folder, runs the
parity and quality gates, writes manifest.json and only then renames the bundle into place.
Profiles (profiles.py) combine format, quantisation, pruning (prune.py) and gates in one TOML
file. Bundles are loaded by ekd_edge.runtime, which this package builds on.
"""

from ekd_edge.export.onefile import export_onefile
from ekd_edge.export.onnx_export import QUANT_ARCHS, export_bundle
from ekd_edge.export.staging import Gates, staged_export

__all__ = ["Gates", "QUANT_ARCHS", "export_bundle", "export_onefile", "staged_export"]
