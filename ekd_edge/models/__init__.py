"""MarianMTModel teachers and students: built from named size presets, saved as safetensors."""

from ekd_edge.models.checkpoint import load_model, save_model, count_parameters
from ekd_edge.models.presets import PRESETS, build_model, model_config

__all__ = ["PRESETS", "build_model", "model_config", "load_model", "save_model", "count_parameters"]
