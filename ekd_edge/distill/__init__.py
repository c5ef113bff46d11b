"""The distillation core: recipes, losses, the training loop and the EKD ladder that composes them."""

from ekd_edge.distill.recipe import Recipe, load_recipe

__all__ = ["Recipe", "load_recipe"]
