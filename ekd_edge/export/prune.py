"""Structured pruning that makes the weight matrices physically smaller.

Importance is first-order Taylor saliency, |w · ∂loss/∂w|, accumulated over validation pairs:
an FFN channel scores the sum over its fc1 row, fc1 bias and fc2 column; a layer scores the sum
over all its weights. The lowest-scoring FFN channels (same count in every layer of a stack, so
the config can say it) and decoder/encoder layers are removed, and the result is saved as a
normal checkpoint that MarianMTModel.from_pretrained reloads and optimum exports.

Attention heads are not pruned: Marian in transformers derives the head width as
d_model / heads, so a layer with fewer heads of the same width has no config that reloads it.

An optional short recovery fine-tune distils from the unpruned model with the trainer of
``ekd_edge.distill``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ekd_edge.errors import EkdError


@dataclass
class PruneSettings:
    ffn_keep: float = 1.0              # fraction of FFN channels kept in every layer
    decoder_layers: int = 0            # decoder layers kept (0 = all)
    encoder_layers: int = 0            # encoder layers kept (0 = all)
    importance_sentences: int = 200    # validation pairs that score importance
    recovery_steps: int = 0            # KD fine-tune steps from the unpruned model (0 = none)
    recovery_lr: float = 5e-4
    recovery_batch_tokens: int = 2048
    seed: int = 0

    def check(self, where: str = "prune settings") -> None:
        if not 0.0 < self.ffn_keep <= 1.0:
            raise EkdError(f"{where}: ffn_keep must be in (0, 1] (got {self.ffn_keep})")
        for name in ("decoder_layers", "encoder_layers", "importance_sentences", "recovery_steps"):
            if getattr(self, name) < 0:
                raise EkdError(f"{where}: {name} must be >= 0 (got {getattr(self, name)})")
        if self.importance_sentences < 1:
            raise EkdError(f"{where}: importance_sentences must be at least 1")


def importance_scores(model, tokenizer, src: list[str], tgt: list[str], batch_size: int = 16) -> dict:
    """Taylor saliency per FFN channel and per layer, from the loss on (src, tgt)."""
    model.eval()  # no dropout: the scores should depend on the data only
    model.zero_grad(set_to_none=True)
    max_length = model.config.max_position_embeddings
    for i in range(0, len(src), batch_size):
        enc = tokenizer(src[i:i + batch_size], text_target=tgt[i:i + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        enc["labels"][enc["labels"] == tokenizer.pad_token_id] = -100
        model(**enc).loss.backward()

    def saliency(param) -> torch.Tensor:
        return (param.detach() * param.grad).abs() if param.grad is not None else torch.zeros_like(param)

    scores = {}
    for stack in ("encoder", "decoder"):
        layers = getattr(model.model, stack).layers
        scores[f"{stack}_ffn"] = [
            saliency(layer.fc1.weight).sum(1) + saliency(layer.fc1.bias) + saliency(layer.fc2.weight).sum(0)
            for layer in layers
        ]
        scores[f"{stack}_layers"] = [float(sum(saliency(p).sum() for p in layer.parameters())) for layer in layers]
    model.zero_grad(set_to_none=True)
    return scores


def _slice_linear(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    """A smaller copy of ``linear`` keeping ``index`` along the output (dim 0) or input (dim 1) features."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    out_features, in_features = weight.shape
    new = torch.nn.Linear(in_features, out_features, bias=linear.bias is not None)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        new.bias.data.copy_(bias.index_select(0, index) if dim == 0 else bias)
    return new


def prune_model(model, scores: dict, settings: PruneSettings):
    """Remove the lowest-scoring layers and FFN channels of ``model`` in place; returns it."""
    config = model.config
    for stack, keep_layers in (("encoder", settings.encoder_layers), ("decoder", settings.decoder_layers)):
        module = getattr(model.model, stack)
        layers = list(module.layers)
        ffn_scores = list(scores[f"{stack}_ffn"])
        if keep_layers and keep_layers < len(layers):
            ranked = sorted(range(len(layers)), key=lambda i: -scores[f"{stack}_layers"][i])
            kept = sorted(ranked[:keep_layers])  # keep the original order of the survivors
            layers = [layers[i] for i in kept]
            ffn_scores = [ffn_scores[i] for i in kept]
        ffn_dim = layers[0].fc1.out_features
        keep_channels = max(1, round(ffn_dim * settings.ffn_keep))
        for index, (layer, channel_scores) in enumerate(zip(layers, ffn_scores)):
            if keep_channels < ffn_dim:
                kept = torch.sort(torch.topk(channel_scores, keep_channels).indices).values
                layer.fc1 = _slice_linear(layer.fc1, kept, dim=0)
                layer.fc2 = _slice_linear(layer.fc2, kept, dim=1)
            # The KV cache is addressed by layer_idx, which must follow the new positions.
            for attention in ("self_attn", "encoder_attn"):
                if hasattr(layer, attention):
                    getattr(layer, attention).layer_idx = index
        module.layers = torch.nn.ModuleList(layers)
        setattr(config, f"{stack}_layers", len(layers))
        setattr(config, f"{stack}_ffn_dim", keep_channels)
    config.num_hidden_layers = config.encoder_layers
    return model


def prune_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, settings: PruneSettings, valid,
                     train_data=None, progress=None) -> dict:
    """Prune ``checkpoint_dir`` into a new checkpoint ``out_dir``; returns a report (params before/after, scores).

    ``valid`` (ParallelText) scores importance; ``train_data`` (ParallelText) feeds the recovery
    fine-tune when ``settings.recovery_steps`` > 0.
    """
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import count_parameters, load_model, save_model

    report = progress or (lambda message: None)
    settings.check()
    checkpoint_dir = Path(checkpoint_dir)
    tokenizer = load_tokenizer(checkpoint_dir)
    model = load_model(checkpoint_dir)
    before = count_parameters(model)
    shape_before = _shape(model.config)
    n = min(settings.importance_sentences, len(valid.src))
    report(f"scoring importance on {n} validation pairs")
    torch.manual_seed(settings.seed)
    scores = importance_scores(model, tokenizer, valid.src[:n], valid.tgt[:n])
    prune_model(model, scores, settings)
    after = count_parameters(model)

    recovery = None
    if settings.recovery_steps:
        if train_data is None:
            raise EkdError("prune: recovery_steps needs training data")
        report(f"recovery fine-tune: {settings.recovery_steps} KD steps from the unpruned model")
        recovery = _recover(model, load_model(checkpoint_dir).eval(), tokenizer, train_data, settings)

    result = {
        "source": str(checkpoint_dir),
        "settings": asdict(settings),
        "params_before": before,
        "params_after": after,
        "params_ratio": round(after / before, 4),
        "shape_before": shape_before,
        "shape_after": _shape(model.config),
        "recovery": recovery,
    }
    save_model(model, out_dir, tokenizer_dir=checkpoint_dir, extra={"pruning": result})
    # A pruned checkpoint is only useful if it reloads as a plain Marian model.
    reloaded = load_model(out_dir)
    if count_parameters(reloaded) != after:
        raise EkdError(f"{out_dir}: pruned checkpoint reloads with {count_parameters(reloaded)} parameters, not {after}")
    report(f"pruned {before:,} -> {after:,} parameters ({after / before:.0%})")
    return result


def _shape(config) -> dict:
    return {key: getattr(config, key) for key in ("encoder_layers", "decoder_layers", "encoder_ffn_dim",
                                                  "decoder_ffn_dim", "encoder_attention_heads", "d_model")}


def _recover(model, teacher, tokenizer, train_data, settings: PruneSettings) -> dict:
    from ekd_edge.distill.batches import BatchStream, tokenize_pairs
    from ekd_edge.distill.recipe import DistillSettings, TrainingSettings
    from ekd_edge.distill.trainer import train

    training = TrainingSettings(batch_tokens=settings.recovery_batch_tokens, lr=settings.recovery_lr,
                                warmup_steps=max(1, settings.recovery_steps // 10))
    pairs = tokenize_pairs(tokenizer, train_data.src, train_data.tgt, max_length=model.config.max_position_embeddings)
    stream = BatchStream(pairs, training.batch_tokens, seed=settings.seed)
    torch.manual_seed(settings.seed)
    result = train(model, stream, settings.recovery_steps, training, teacher=teacher, distill=DistillSettings(),
                   description="recovery")
    return {"steps": result.steps, "final_loss": round(result.final_loss, 4), "wall_s": round(result.wall_s, 1)}
