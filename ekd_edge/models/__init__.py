"""MarianMTModel teachers and students: built from named size presets, saved as safetensors."""

from ekd_edge.models.checkpoint import config_parameters, count_parameters, load_model, save_model
from ekd_edge.models.presets import PRESETS, build_model, model_config

__all__ = ["PRESETS", "build_model", "config_parameters", "count_parameters", "load_model", "model_config",
           "save_model"]
