"""Shared fixtures: a tiny real tokenizer and a tiny real Marian model trained on the bundled data.

Everything here is built from the bundled LibreOffice corpus in a few seconds, offline.
"""

from __future__ import annotations

import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from ekd_edge.data import load_corpus, train_tokenizer

TINY_VOCAB = 400
TINY_PAIRS = 2000


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module's tests (modules opt in with pytestmark)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lo_train():
    return load_corpus("lo-help-en-de").split("train").head(TINY_PAIRS)


@pytest.fixture(scope="session")
def lo_valid():
    return load_corpus("lo-help-en-de").split("valid")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, lo_train):
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(lo_train.src + lo_train.tgt, out, vocab_size=TINY_VOCAB)
    return out


def quick_train(model, tokenizer, pairs, steps: int, lr: float = 5e-3, batch_size: int = 32, seed: int = 0):
    """Plain cross-entropy steps on short pairs: enough for a model that emits real words."""
    import torch

    torch.manual_seed(seed)
    short = [(s, t) for s, t in zip(pairs.src, pairs.tgt) if len(s) < 60 and len(t) < 60]
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = [short[(step * batch_size + i) % len(short)] for i in range(batch_size)]
        enc = tokenizer([s for s, _ in batch], text_target=[t for _, t in batch], padding=True, return_tensors="pt")
        enc["labels"][enc["labels"] == tokenizer.pad_token_id] = -100
        loss = model(**enc).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    return model


@pytest.fixture(scope="session")
def nano_checkpoint(tmp_path_factory, tokenizer_dir, lo_train):
    """A 1+1-layer, d_model 32 Marian trained for ~3 s: real, tiny, deterministic, and its greedy
    output already depends on the input (about 26 distinct outputs on 30 validation sentences)."""
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import build_model, save_model

    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model("nano", vocab_size=TINY_VOCAB, seed=0, max_positions=64)
    quick_train(model, tokenizer, lo_train, steps=200)
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "nano", tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def sharp_checkpoint(nano_checkpoint, lo_train, tmp_path_factory):
    """nano_checkpoint fitted to 64 pairs, so that its greedy output depends on the input and its
    BLEU on those pairs is far above an untrained model's.

    nano_checkpoint emits nearly the same tokens for every sentence, which would let almost any
    graph pass a parity check.
    """
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import load_model, save_model

    model = load_model(nano_checkpoint)
    quick_train(model, load_tokenizer(nano_checkpoint), lo_train.head(64), steps=200, lr=1e-2)
    return save_model(model, tmp_path_factory.mktemp("sharp") / "nano", tokenizer_dir=nano_checkpoint)


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything tries to open a network connection."""

    def guard(*args, **kwargs):
        raise RuntimeError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)


def tiny_recipe(name: str, body: str, *, corpus: str = "lo-help-en-de", pairs: int = 200, head: str = "",
                data: str = "", training: str = "") -> str:
    """A recipe that runs in seconds (a 120-piece tokenizer, pairs of at most 24 tokens, two
    validation sentences): ``head`` goes before [data], ``data`` and ``training`` into their tables,
    ``body`` (teachers, student, stages) after them."""
    return (f'name = "{name}"\nseed = 1\n{head}[data]\ncorpus = "{corpus}"\n{data}max_train_pairs = {pairs}\n'
            "max_length = 24\nvalid_sentences = 2\n[tokenizer]\nvocab_size = 120\n[training]\nbatch_tokens = 256\n"
            f"eval_max_new_tokens = 4\nthreads = 1\n{training}{body}")


def needs(ready: bool, message: str) -> None:
    """Skip a test whose runtime is not set up here; with CI set, fail it: CI must run every test."""
    from ekd_edge.bench.arm import in_ci

    if not ready:
        if in_ci():
            pytest.fail(f"{message}; CI is set, so this is a failure")
        pytest.skip(message)
