"""Data-parallel distillation: 2 processes under torchrun (gloo, CPU) against 1 process, same global batch."""

import os
import subprocess
import sys
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from ekd_edge.distill import distributed
from ekd_edge.distill.ladder import run_recipe
from ekd_edge.distill.losses import label_smoothed_ce
from ekd_edge.distill.recipe import parse_recipe
from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.models import build_model

# dropout = 0: with dropout each rank draws masks for its own rows, so the runs would agree in
# distribution only. Without it the two runs do the same arithmetic up to summation order.
RECIPE = """
name = "ddp"
seed = 7
[data]
corpus = "lo-help-en-de"
max_train_pairs = 300
max_length = 24
valid_sentences = 4
[tokenizer]
vocab_size = 150
[training]
batch_tokens = 384
lr = 3e-3
warmup_steps = 2
dropout = 0.0
eval_max_new_tokens = 4
threads = 1
checkpoint_every = 4
[[teacher]]
name = "t"
size = "nano"
steps = 8
[student]
size = "nano"
steps_per_stage = 8
"""

# Two processes sum the gradient in another order (gloo all-reduce of per-rank partial sums), so
# the runs differ by float32 round-off, which AdamW carries forward: measured ≤ 4e-6 after 16 steps.
# One exception: attention key biases have an exactly zero true gradient (softmax ignores a shift
# shared by all keys), so their gradient *is* round-off, and AdamW's update lr·m/√v turns any
# round-off into a step of size ~lr. Those are held to the bound of that walk, 2·lr·steps.
TOLERANCE = 1e-5
ZERO_GRADIENT_TOLERANCE = 2 * 3e-3 * 16

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_row_shards_reassemble_the_global_token_mean(monkeypatch):
    """The per-rank loss factor makes DDP's gradient average equal the single-process token mean."""
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11)
    labels = torch.randint(0, 11, (5, 7))
    labels[1, 3:] = -100
    labels[4, 1:] = -100
    batch = {"logits": logits}
    full = label_smoothed_ce(logits, labels, 0.1)
    for world in (2, 3, 8):  # 8 > rows: some ranks get no rows and contribute zero
        total = 0.0
        for rank in range(world):
            monkeypatch.setattr(distributed, "_context", distributed.DistContext(rank, world))
            local, local_labels, share = distributed.local_batch(batch, labels)
            total += share * label_smoothed_ce(local["logits"], local_labels, 0.1) / world
        assert torch.allclose(total, full, atol=1e-6), world
    monkeypatch.setattr(distributed, "_context", None)


def test_shard_range_covers_every_item_once():
    for n in (0, 1, 5, 17):
        parts = [list(distributed.shard_range(n, rank, 3)) for rank in range(3)]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    recipe_file = tmp_path / "ddp.toml"
    recipe_file.write_text(RECIPE)
    single = tmp_path / "single"
    run_recipe(parse_recipe(tomllib.loads(RECIPE), str(recipe_file)), single, RECIPE)

    ddp = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ekd_edge", "distill", str(recipe_file), "--run-dir", str(ddp)],
        env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rank 0 alone wrote: one summary line on stdout, no leftovers of a second writer.
    assert proc.stdout.count("{") == 1
    assert not list(ddp.rglob("*.progress.pt")) and not list(ddp.rglob(".*.tmp"))

    for model in ("teachers/t", "students/stage-1"):
        got = load_file(ddp / model / "model.safetensors")
        want = load_file(single / model / "model.safetensors")
        assert got.keys() == want.keys()
        for key in want:
            bound = ZERO_GRADIENT_TOLERANCE if key.endswith("k_proj.bias") else TOLERANCE
            assert (got[key] - want[key]).abs().max().item() <= bound, (model, key)

    # The tolerance is small against what these few steps change: the student moved well beyond it.
    start = build_model("nano", len(load_tokenizer(single / "tokenizer")), seed=7 + 1000).state_dict()
    trained = load_file(single / "students/stage-1/model.safetensors")
    assert max((trained[k] - start[k]).abs().max().item() for k in trained) > 100 * TOLERANCE
