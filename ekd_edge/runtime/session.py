"""onnxruntime session settings a bundle asks for in its manifest.

Portable bundles (export/portable.py) must not be fused back into per-architecture kernels, so
their manifest records the "basic" optimisation level and every loader honours it.
"""

from __future__ import annotations

OPTIMIZATION_LEVELS = {"all": "ORT_ENABLE_ALL", "basic": "ORT_ENABLE_BASIC"}
PORTABLE_LEVEL = "basic"


def optimization_level(settings: dict | None):
    """The onnxruntime GraphOptimizationLevel a bundle's manifest settings ask for (default: all)."""
    import onnxruntime as ort

    name = (settings or {}).get("graph_optimization_level", "all")
    return getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS.get(name, "ORT_ENABLE_ALL"))
