"""Copy-weight initialisation: a student starts from a subset of its teacher's layers.

The student keeps the teacher's embeddings and copies encoder/decoder layers through a layer map
(Sanh et al. 2019; Shleifer & Rush 2020 "shrink and fine-tune"):

    "every_other"   teacher layers 0, 2, 4, …, with the top layer in place of the last one
                    (6 → 3: 0, 2, 5); a teacher with fewer than twice the student's layers is
                    sampled evenly with both ends kept (4 → 3: 0, 2, 3)
    "first"         teacher layers 0 … n−1
    [0, 3, 5]       an explicit list, used for both stacks

Layers are copied whole, so the widths (d_model, ffn_dim, heads) must match; when they do not,
the error names the differing settings instead of projecting weights silently.
"""

from __future__ import annotations

import torch

from ekd_edge.errors import RecipeError

LAYER_MAPS = ("every_other", "first")
MATCHING = ("d_model", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads",
            "decoder_attention_heads", "vocab_size")


def layer_map(mapping: str | list[int], teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layer index for each student layer."""
    if student_layers > teacher_layers:
        raise RecipeError(f"copy-init: the student has {student_layers} layers but the teacher only {teacher_layers}")
    if isinstance(mapping, list):
        chosen = list(mapping)
    elif mapping == "first":
        chosen = list(range(student_layers))
    elif mapping == "every_other":
        if student_layers == 1:
            chosen = [0]
        elif teacher_layers >= 2 * student_layers:
            chosen = list(range(0, 2 * student_layers, 2))
            chosen[-1] = teacher_layers - 1   # keep the top layer: it speaks to the output projection
        else:   # too shallow a teacher for a strict stride of two: spread evenly, ends included
            chosen = [int(i * (teacher_layers - 1) / (student_layers - 1) + 0.5) for i in range(student_layers)]
    else:
        raise RecipeError(f"copy-init: unknown layer map {mapping!r}; use one of {', '.join(LAYER_MAPS)} "
                          "or an explicit list of teacher layers")
    if len(chosen) != student_layers or any(not 0 <= i < teacher_layers for i in chosen):
        raise RecipeError(f"copy-init: layer map {chosen} must name {student_layers} teacher layers in 0..{teacher_layers - 1}")
    return chosen


def parse_init(spec: str) -> str | list[int] | None:
    """``"warm"`` → None (warm start / random), ``"copy:every_other"``, ``"copy:first"``, ``"copy:0,2,5"``."""
    if spec in ("", "warm"):
        return None
    if not spec.startswith("copy:"):
        raise RecipeError(f"init {spec!r}: use \"warm\", \"copy:every_other\", \"copy:first\" or \"copy:0,2,5\"")
    body = spec.removeprefix("copy:")
    if body in LAYER_MAPS:
        return body
    try:
        return [int(x) for x in body.split(",")]
    except ValueError:
        raise RecipeError(f"init {spec!r}: the layer list must be integers like \"copy:0,2,5\"") from None


@torch.no_grad()
def copy_init(student, teacher, mapping: str | list[int] = "every_other") -> dict:
    """Overwrite ``student``'s weights with the teacher's embeddings and mapped layers; returns the maps."""
    s_cfg, t_cfg = student.config, teacher.config
    differ = [f"{key} {getattr(s_cfg, key)} vs {getattr(t_cfg, key)}" for key in MATCHING
              if getattr(s_cfg, key) != getattr(t_cfg, key)]
    if differ:
        raise RecipeError("copy-init needs a student as wide as its teacher; differing: " + ", ".join(differ)
                          + " (make the student's widths match or use init = \"warm\")")
    s_model, t_model = student.model, teacher.model
    maps = {}
    for side in ("encoder", "decoder"):
        s_stack, t_stack = getattr(s_model, side), getattr(t_model, side)
        chosen = layer_map(mapping, len(t_stack.layers), len(s_stack.layers))
        for s_layer, t_index in zip(s_stack.layers, chosen):
            s_layer.load_state_dict(t_stack.layers[t_index].state_dict())
        for name, module in t_stack.named_children():
            if name != "layers":   # embeddings, positions, layer norms
                getattr(s_stack, name).load_state_dict(module.state_dict())
        maps[side] = chosen
    s_model.shared.load_state_dict(t_model.shared.state_dict())
    if hasattr(student, "final_logits_bias"):
        student.final_logits_bias.copy_(teacher.final_logits_bias)
    student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    return maps
