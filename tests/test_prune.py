"""Structured pruning: smaller matrices chosen by importance, a checkpoint that reloads and caches
correctly, and the KD recovery fine-tune. Tiny real Marian models; nothing is mocked."""

from __future__ import annotations

import pytest
import torch

from ekd_edge.errors import EkdError
from ekd_edge.export.prune import PruneSettings, importance_scores, prune_checkpoint, prune_model

DEEP_DECODER = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 3, "attention_heads": 2, "ffn_dim": 64}


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def deep_checkpoint(tmp_path_factory, tokenizer_dir, lo_train):
    """A 1+3-layer nano model trained briefly, so that layer and channel importance differ."""
    from conftest import TINY_VOCAB, quick_train

    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import build_model, save_model

    model = build_model(DEEP_DECODER, vocab_size=TINY_VOCAB, seed=1, max_positions=64)
    quick_train(model, load_tokenizer(tokenizer_dir), lo_train, steps=30)
    return save_model(model, tmp_path_factory.mktemp("deep") / "model", tokenizer_dir=tokenizer_dir)


def test_pruning_keeps_the_most_important_channels_and_layers(deep_checkpoint, lo_valid):
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import count_parameters, load_model

    model = load_model(deep_checkpoint)
    tokenizer = load_tokenizer(deep_checkpoint)
    scores = importance_scores(model, tokenizer, lo_valid.src[:24], lo_valid.tgt[:24])
    assert all(s.shape == (64,) and float(s.sum()) > 0 for s in scores["decoder_ffn"])
    original_fc1 = [layer.fc1.weight.detach().clone() for layer in model.model.decoder.layers]
    layer_scores = scores["decoder_layers"]
    before = count_parameters(model)

    prune_model(model, scores, PruneSettings(ffn_keep=0.25, decoder_layers=2))

    kept_layers = sorted(sorted(range(3), key=lambda i: -layer_scores[i])[:2])
    assert len(model.model.decoder.layers) == 2 and model.config.decoder_layers == 2
    for new_index, old_index in enumerate(kept_layers):
        layer = model.model.decoder.layers[new_index]
        assert layer.fc1.weight.shape == (16, 32) and layer.fc2.weight.shape == (32, 16)
        best = torch.sort(torch.topk(scores["decoder_ffn"][old_index], 16).indices).values
        assert torch.equal(layer.fc1.weight, original_fc1[old_index][best])
        assert layer.self_attn.layer_idx == new_index
    assert model.config.decoder_ffn_dim == 16 and model.config.encoder_ffn_dim == 16
    assert count_parameters(model) < before


def test_pruned_checkpoint_reloads_and_decodes_with_its_cache(deep_checkpoint, lo_valid, tmp_path):
    from transformers import MarianMTModel

    from ekd_edge.data.tokenizer import load_tokenizer

    report = prune_checkpoint(deep_checkpoint, tmp_path / "pruned", PruneSettings(ffn_keep=0.5, decoder_layers=2),
                              lo_valid)
    assert report["params_after"] < report["params_before"]
    assert report["shape_after"]["decoder_layers"] == 2 and report["shape_after"]["decoder_ffn_dim"] == 32
    model = MarianMTModel.from_pretrained(tmp_path / "pruned").eval()
    tokenizer = load_tokenizer(tmp_path / "pruned")
    enc = tokenizer(lo_valid.src[:6], return_tensors="pt", padding=True)
    with torch.inference_mode():
        cached = model.generate(**enc, max_new_tokens=12, use_cache=True)
        uncached = model.generate(**enc, max_new_tokens=12, use_cache=False)
    # Renumbered layers must address their own cache slots, else cached decoding diverges.
    assert torch.equal(cached, uncached)


def test_recovery_fine_tune_distils_from_the_unpruned_model(nano_checkpoint, lo_valid, lo_train, tmp_path):
    report = prune_checkpoint(nano_checkpoint, tmp_path / "pruned",
                              PruneSettings(ffn_keep=0.5, recovery_steps=4, recovery_batch_tokens=256),
                              lo_valid, lo_train.head(200))
    assert report["recovery"]["steps"] == 4 and report["recovery"]["final_loss"] > 0
    with pytest.raises(EkdError, match="recovery_steps needs training data"):
        prune_checkpoint(nano_checkpoint, tmp_path / "again", PruneSettings(recovery_steps=2), lo_valid)


def test_impossible_settings_are_refused(nano_checkpoint, lo_valid, tmp_path):
    with pytest.raises(EkdError, match="ffn_keep"):
        prune_checkpoint(nano_checkpoint, tmp_path / "p", PruneSettings(ffn_keep=0.0), lo_valid)
    assert not (tmp_path / "p").exists()


# --- importance against an independent |w · ∂L/∂w|, and recovery against the validation loss ---


def _teacher_forced(model, tokenizer, src, tgt):
    """(input_ids, attention_mask, decoder_input_ids, labels) built by hand: start token + shifted labels."""
    enc = tokenizer(src, text_target=tgt, padding=True, truncation=True,
                    max_length=model.config.max_position_embeddings, return_tensors="pt")
    labels = enc["labels"].masked_fill(enc["labels"] == tokenizer.pad_token_id, -100)
    decoder_input_ids = torch.full_like(labels, model.config.pad_token_id)
    decoder_input_ids[:, 0] = model.config.decoder_start_token_id
    decoder_input_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, model.config.pad_token_id)
    return enc["input_ids"], enc["attention_mask"], decoder_input_ids, labels


def _token_ce(model, tokenizer, src, tgt):
    """Mean cross-entropy per target token (no label smoothing), written out with torch ops."""
    input_ids, attention_mask, decoder_input_ids, labels = _teacher_forced(model, tokenizer, src, tgt)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100)


def test_importance_is_first_order_taylor_saliency(deep_checkpoint, lo_valid):
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import load_model

    tokenizer = load_tokenizer(deep_checkpoint)
    src, tgt = lo_valid.src[:12], lo_valid.tgt[:12]   # one batch of the default batch_size
    scores = importance_scores(load_model(deep_checkpoint), tokenizer, src, tgt)

    model = load_model(deep_checkpoint).eval()
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]   # sinusoidal positions are frozen
    grads = dict(zip(names, torch.autograd.grad(_token_ce(model, tokenizer, src, tgt), [params[n] for n in names],
                                                allow_unused=True)))

    def taylor(name):
        g = grads[name] if grads[name] is not None else torch.zeros_like(params[name])
        return (params[name].detach() * g).abs()

    for stack in ("encoder", "decoder"):
        layers = getattr(model.model, stack).layers
        assert len(scores[f"{stack}_ffn"]) == len(scores[f"{stack}_layers"]) == len(layers)
        for i in range(len(layers)):
            prefix = f"model.{stack}.layers.{i}."
            channel = (taylor(prefix + "fc1.weight").sum(1) + taylor(prefix + "fc1.bias")
                       + taylor(prefix + "fc2.weight").sum(0))
            torch.testing.assert_close(scores[f"{stack}_ffn"][i], channel, rtol=1e-4, atol=1e-6 * float(channel.max()))
            layer = sum(float(taylor(n).sum()) for n in names if n.startswith(prefix))
            assert scores[f"{stack}_layers"][i] == pytest.approx(layer, rel=1e-4)
    # a score that ignored the gradient would rank the channels differently
    w_only = model.model.decoder.layers[0].fc1.weight.detach().abs().sum(1)
    assert not torch.equal(torch.argsort(scores["decoder_ffn"][0]), torch.argsort(w_only))


def test_recovery_lowers_the_validation_loss(nano_checkpoint, lo_valid, lo_train, tmp_path):
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import load_model

    common = dict(ffn_keep=0.25, importance_sentences=64)
    prune_checkpoint(nano_checkpoint, tmp_path / "pruned", PruneSettings(**common), lo_valid)
    report = prune_checkpoint(nano_checkpoint, tmp_path / "recovered",
                              PruneSettings(**common, recovery_steps=10, recovery_lr=2e-3, recovery_batch_tokens=512),
                              lo_valid, lo_train.head(400))
    assert report["recovery"]["steps"] == 10
    tokenizer = load_tokenizer(nano_checkpoint)
    held_out = lo_valid.src[100:300], lo_valid.tgt[100:300]   # not the pairs that scored importance

    def valid_loss(path):
        with torch.no_grad():
            return _token_ce(load_model(path).eval(), tokenizer, *held_out).item()

    unpruned, pruned, recovered = (valid_loss(p) for p in (nano_checkpoint, tmp_path / "pruned",
                                                            tmp_path / "recovered"))
    assert pruned > unpruned + 0.05            # pruning a quarter of the channels costs something ...
    assert recovered < pruned - 0.25 * (pruned - unpruned)   # ... and recovery wins a good part of it back
