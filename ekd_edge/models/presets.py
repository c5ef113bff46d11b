"""Named Marian sizes (presets.toml) turned into MarianConfig / MarianMTModel."""

from __future__ import annotations

import tomllib
from importlib import resources

from ekd_edge.data.tokenizer import EOS_ID, PAD_ID
from ekd_edge.errors import RecipeError

PRESETS: dict[str, dict] = tomllib.loads((resources.files("ekd_edge") / "models" / "presets.toml").read_text())
SIZE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "attention_heads", "ffn_dim")


def resolve_size(size: str | dict, where: str = "model size") -> dict:
    """The five dimensions of a preset name or an explicit table, checked for a buildable model."""
    if isinstance(size, str):
        if size not in PRESETS:
            raise RecipeError(f"{where}: unknown preset {size!r}; presets: {', '.join(PRESETS)}")
        return dict(PRESETS[size])
    unknown = set(size) - set(SIZE_KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(SIZE_KEYS)}")
    missing = set(SIZE_KEYS) - set(size)
    if missing:
        raise RecipeError(f"{where}: the size table lacks {', '.join(sorted(missing))}")
    for key in SIZE_KEYS:
        if not isinstance(size[key], int) or isinstance(size[key], bool) or size[key] < 1:
            raise RecipeError(f"{where}.{key}: must be a whole number >= 1, got {size[key]!r}")
    if size["d_model"] % size["attention_heads"]:
        raise RecipeError(f"{where}: d_model {size['d_model']} is not divisible by attention_heads "
                          f"{size['attention_heads']}")
    return dict(size)


def model_config(size: str | dict, vocab_size: int, max_positions: int = 256, dropout: float = 0.1,
                 init_std: float | None = None):
    """MarianConfig for a preset name or an explicit ``{d_model, encoder_layers, ...}`` table."""
    from transformers import MarianConfig

    dims = resolve_size(size)
    return MarianConfig(
        # d_model^-0.5 rather than transformers' 0.02: with scaled embeddings the token signal then
        # matches the sinusoidal positions' size, and small models learn to use the source sooner.
        init_std=init_std if init_std is not None else dims["d_model"] ** -0.5,
        vocab_size=vocab_size,
        d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"],
        decoder_layers=dims["decoder_layers"],
        encoder_attention_heads=dims["attention_heads"],
        decoder_attention_heads=dims["attention_heads"],
        encoder_ffn_dim=dims["ffn_dim"],
        decoder_ffn_dim=dims["ffn_dim"],
        max_position_embeddings=max_positions,
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation_function="swish",
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        decoder_vocab_size=vocab_size,
    )


def generation_config(max_positions: int = 256):
    """Greedy decoding that always ends in EOS: the same settings for PyTorch and ONNX Runtime."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=PAD_ID,
        bos_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        forced_eos_token_id=EOS_ID,
        max_length=max_positions,
        num_beams=1,
        do_sample=False,
    )


def build_model(size: str | dict, vocab_size: int, seed: int = 0, **config_overrides):
    """A freshly initialised MarianMTModel of the given size."""
    import torch
    from transformers import MarianMTModel

    torch.manual_seed(seed)
    config = model_config(size, vocab_size, **config_overrides)
    model = MarianMTModel(config)
    model.generation_config = generation_config(config.max_position_embeddings)
    return model
