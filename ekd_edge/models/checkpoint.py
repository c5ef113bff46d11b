"""Saving and loading checkpoints: safetensors only, written atomically, checked on load."""

from __future__ import annotations

import json
from pathlib import Path

from ekd_edge.data.tokenizer import copy_tokenizer, vocab_fingerprint
from ekd_edge.errors import CheckpointError
from ekd_edge.files import replace_dir, staged

SUPPORTED_MODEL_TYPES = ("marian",)


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def config_parameters(directory: str | Path) -> int | None:
    """``count_parameters`` of the architecture in ``directory/config.json``, allocating no weights;
    None when there is no readable Marian config."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        return None
    try:
        import torch
        from transformers import MarianConfig, MarianMTModel

        config = MarianConfig.from_pretrained(str(directory), local_files_only=True)
        with torch.device("meta"):   # shapes without storage: an exact count at no memory cost
            return count_parameters(MarianMTModel(config))
    except Exception:  # a foreign or damaged config only means the count is unknown
        return None


def save_model(model, out_dir: str | Path, tokenizer_dir: str | Path | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (+ tokenizer files, + ``extra`` as metrics.json) to ``out_dir`` atomically.

    Everything is written to a sibling temporary directory which then replaces ``out_dir`` in one
    rename, so a crash leaves either the old checkpoint or the new one, never half of one.
    """
    out_dir = Path(out_dir)
    with staged(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)
        if extra is not None:
            (tmp / "metrics.json").write_text(json.dumps(extra, indent=2))
        replace_dir(tmp, out_dir)
    return out_dir


def check_checkpoint(directory: str | Path) -> dict:
    """Validate a checkpoint directory before any model code touches it; returns its config."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: corrupt config ({exc})") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{config_path}: unsupported model type {model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    weights = directory / "model.safetensors"
    if not weights.is_file():
        hint = " (pickled .bin weights are not loaded: convert them to safetensors)" if (directory / "pytorch_model.bin").exists() else ""
        raise CheckpointError(f"{directory}: no model.safetensors{hint}")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{weights}: corrupt weights file ({exc})") from None
    return config


def load_model(directory: str | Path, expected_vocab: str | Path | None = None):
    """Load a Marian checkpoint for training or inference.

    ``expected_vocab``: a tokenizer directory; the checkpoint must carry the very same vocabulary
    (word-level KD and shared tokenisation depend on it), else a CheckpointError says so.
    """
    from transformers import MarianMTModel

    directory = Path(directory)
    config = check_checkpoint(directory)
    if expected_vocab is not None:
        check_same_vocab(directory, expected_vocab, config)
    try:
        model = MarianMTModel.from_pretrained(str(directory), use_safetensors=True)
    except Exception as exc:
        raise CheckpointError(f"{directory}: cannot load weights ({type(exc).__name__}: {exc})") from None
    return model


def check_same_vocab(checkpoint_dir: str | Path, tokenizer_dir: str | Path, config: dict | None = None) -> None:
    checkpoint_dir, tokenizer_dir = Path(checkpoint_dir), Path(tokenizer_dir)
    config = config or json.loads((checkpoint_dir / "config.json").read_text())
    expected_size = len(json.loads((Path(tokenizer_dir) / "vocab.json").read_text()))
    if config.get("vocab_size") != expected_size:
        raise CheckpointError(
            f"{checkpoint_dir}: vocabulary size {config.get('vocab_size')} differs from the run's tokenizer "
            f"({expected_size}); teacher and student must share one vocabulary"
        )
    if not (checkpoint_dir / "vocab.json").is_file():
        raise CheckpointError(f"{checkpoint_dir}: has no vocab.json, so its vocabulary cannot be checked against the run's")
    if vocab_fingerprint(checkpoint_dir) != vocab_fingerprint(tokenizer_dir):
        raise CheckpointError(
            f"{checkpoint_dir}/vocab.json differs from the run's tokenizer {tokenizer_dir}/vocab.json; "
            "teacher and student must share one vocabulary"
        )
