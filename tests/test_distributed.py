"""Data-parallel distillation: 2 processes under torchrun (gloo, CPU) against 1 process, same global batch;
teacher caches and seq-KD decoding shared out across ranks, written once by rank 0."""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
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


# Builds the tokenised corpus, a top-k teacher cache and seq-KD targets from a fixed teacher, as
# plan_stage does, then records what this rank got. Run as one process or under torchrun.
SHARD_WORKER = """
import json, sys
from pathlib import Path
from ekd_edge.data import load_corpus
from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import tokenize_to_disk
from ekd_edge.distill.seqkd import SeqKDSettings, distill_targets
from ekd_edge.distill.teacher_cache import build_teacher_cache
from ekd_edge.models import load_model

tokenizer_dir, teacher_dir, cache_root, out = map(Path, sys.argv[1:5])
tokenizer, teacher = load_tokenizer(tokenizer_dir), load_model(teacher_dir)
text = load_corpus("lo-help-en-de").split("train").head(70)
pairs = tokenize_to_disk(tokenizer, text.src, text.tgt, 62, cache_root)
# batches of 12: an odd number of batches, so with 2 ranks the last round leaves rank 1 without one
cache = build_teacher_cache(teacher, teacher_dir, pairs, cache_root, k=8, batch_pairs=12)
# chunks of 8 sentences in batches of 3: ranks get unequal shares, the last chunk is short
settings = SeqKDSettings(beams=2, max_new_tokens=10, chunk=8, batch_size=3)
data = distill_targets(teacher, teacher_dir, tokenizer, text.src[:30], text.tgt[:30], cache_root, settings)
rank = distributed.context().rank
(out / f"rank-{rank}.json").write_text(json.dumps({
    "pairs": len(pairs), "tgt": [pairs.tgt[i] for i in range(len(pairs))], "targets": data.targets,
    "cache_sum": float(cache.values.sum()), "built": cache.built, "decoded_now": data.decoded_now}))
distributed.shutdown()
"""


def _run_shard_worker(tmp_path, name, tokenizer_dir, teacher_dir, ranks):
    script, out, cache_root = tmp_path / "worker.py", tmp_path / f"{name}-out", tmp_path / name
    script.write_text(SHARD_WORKER)
    out.mkdir()
    launch = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(ranks)]
    proc = subprocess.run(launch + [str(script), str(tokenizer_dir), str(teacher_dir), str(cache_root), str(out)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cache_root, [json.loads((out / f"rank-{r}.json").read_text()) for r in range(ranks)]


def test_two_ranks_share_cache_and_seqkd_work_and_write_one_set_of_files(tmp_path, tokenizer_dir, nano_checkpoint):
    one, (solo,) = _run_shard_worker(tmp_path, "one", tokenizer_dir, nano_checkpoint, 1)
    two, ranks = _run_shard_worker(tmp_path, "two", tokenizer_dir, nano_checkpoint, 2)

    # One set of files, named as one process names them (same keys), no per-rank or temporary leftovers.
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*"))  # noqa: E731
    assert files(two) == files(one)
    assert len(list(two.glob("teacher-*"))) == len(list(two.glob("seqkd-*"))) == len(list(two.glob("pairs-*"))) == 1
    assert not [p for p in two.rglob("*") if p.name.startswith(".") or "chunk-" in p.name or "rank" in p.name]

    # Every rank did its share (cache built, every sentence decoded once) and reads the same results.
    assert -(-solo["pairs"] // 12) % 2 == 1 and len(set(solo["targets"])) > 10   # the cases above are exercised
    for got in ranks:
        assert got["built"] and got["decoded_now"] == 30
        assert got["tgt"] == solo["tgt"] and got["targets"] == solo["targets"]
        assert got["cache_sum"] == ranks[0]["cache_sum"]
    assert (two / next(two.glob("seqkd-*")).name / "targets.txt").read_text() == \
        (one / next(one.glob("seqkd-*")).name / "targets.txt").read_text()

    # Each rank runs the very batches one process runs (whole batches of the length-sorted order), on
    # one thread, so the numbers come out identical in practice. The allowance only admits float32
    # round-off (1e-6 on log-probabilities of order 1-10); a token swap inside the top k needs two
    # values within that round-off, so indices are compared wherever neighbouring values differ by more.
    cache_one, cache_two = next(one.glob("teacher-*")), next(two.glob("teacher-*"))
    arrays = lambda d: {n: np.load(d / f"{n}.npy") for n in ("values", "indices", "tail", "offsets")}  # noqa: E731
    a, b = arrays(cache_one), arrays(cache_two)
    assert np.array_equal(a["offsets"], b["offsets"]) and a["values"].shape == b["values"].shape
    np.testing.assert_allclose(b["values"], a["values"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(b["tail"], a["tail"], rtol=0, atol=1e-6)
    clear = (np.diff(a["values"], axis=1) < -2e-6).all(axis=1)   # no near tie among this position's top k
    assert clear.mean() > 0.9
    assert np.array_equal(a["indices"][clear], b["indices"][clear])


# A stage of a sharded teacher cache (teacher_shards.py), as CachedTeacher drives it: at each step
# prepare(step), then this rank's rows. argv: the stage's steps start, stop and the shard lookahead
# (0: open_teacher_cache with its own choices, as a stage opens it). Run as one process or under torchrun.
SHARDED_WORKER = """
import json, sys
from pathlib import Path
import numpy as np
from ekd_edge.data import load_corpus
from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import BatchStream, tokenize_to_disk
from ekd_edge.distill.teacher_cache import rank_rows
from ekd_edge.distill.teacher_shards import ShardedTeacherCache, open_teacher_cache
from ekd_edge.models import load_model

tokenizer_dir, teacher_dir, cache_root, out = map(Path, sys.argv[1:5])
start, stop, lookahead = map(int, sys.argv[5:8])
tokenizer, teacher = load_tokenizer(tokenizer_dir), load_model(teacher_dir)
text = load_corpus("lo-help-en-de").split("train").head(%(texts)d)
pairs = tokenize_to_disk(tokenizer, text.src, text.tgt, 62, cache_root)
stream = BatchStream(pairs, %(batch_tokens)d, %(seed)d)
if lookahead:   # teacher batches of 4 pairs: one process and two ranks pad each pair differently
    cache = ShardedTeacherCache(teacher, teacher_dir, pairs, stream, cache_root, %(k)d, start_step=start,
                                stop_step=stop, lookahead=lookahead, batch_pairs=4)
else:
    cache = open_teacher_cache(teacher, teacher_dir, stream, cache_root, %(k)d, 1.0, start, stop - start)
rows = {}
for step in range(start, stop):
    cache.prepare(step)
    for p in rank_rows(stream.indices(step)):
        rows.update({f"{p}-{name}": np.asarray(a) for name, a in zip("vit", cache.rows(p))})
rank = distributed.context().rank
np.savez(out / f"rank-{rank}.npz", **rows)
(out / f"rank-{rank}.json").write_text(json.dumps({"class": type(cache).__name__, **cache.record}))
distributed.shutdown()
"""
SHARDED = {"texts": 160, "batch_tokens": 300, "seed": 5, "k": 6}
STAGE, LOOKAHEAD = (2, 12), 3   # steps 2-11 of a ~27-step epoch: shard windows 2-4, 5-7, 8-10, 11


def _run_sharded_worker(tmp_path, out_name, cache_root, tokenizer_dir, teacher_dir, ranks, lookahead):
    script, out = tmp_path / "sharded_worker.py", tmp_path / out_name
    script.write_text(SHARDED_WORKER % SHARDED)
    out.mkdir()
    launch = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node", str(ranks)]
    proc = subprocess.run(launch + [str(script), str(tokenizer_dir), str(teacher_dir), str(cache_root), str(out),
                                    str(STAGE[0]), str(STAGE[1]), str(lookahead)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [(json.loads((out / f"rank-{r}.json").read_text()), np.load(out / f"rank-{r}.npz"))
            for r in range(ranks)]


def _shards_on_disk(cache_root):
    """[(rank, window's first step, pair list)] of every shard, and each cached pair's rows (values,
    indices, tail), read from the files themselves; a pair found twice keeps its last rows."""
    (directory,) = cache_root.glob("teacher-*-shards")
    shards, rows = [], {}
    for shard in sorted(directory.glob("shard-*")):
        _, rank, first, _pid = shard.name.split("-")
        a = {n: np.load(shard / f"{n}.npy") for n in ("pairs", "offsets", "values", "indices", "tail")}
        assert a["offsets"][-1] == len(a["values"]) == len(a["indices"]) == len(a["tail"])
        shards.append((int(rank), int(first), a["pairs"].tolist()))
        for row, p in enumerate(a["pairs"].tolist()):
            lo, hi = a["offsets"][row], a["offsets"][row + 1]
            rows[p] = (a["values"][lo:hi], a["indices"][lo:hi], a["tail"][lo:hi])
    return shards, rows


def test_two_ranks_build_teacher_shards_of_their_own_rows_that_a_later_run_reads(tmp_path, tokenizer_dir,
                                                                                  nano_checkpoint):
    one, two = tmp_path / "one", tmp_path / "two"
    [(solo, _)] = _run_sharded_worker(tmp_path, "one-out", one, tokenizer_dir, nano_checkpoint, 1, LOOKAHEAD)
    ranks = _run_sharded_worker(tmp_path, "two-out", two, tokenizer_dir, nano_checkpoint, 2, LOOKAHEAD)

    # The batches, rebuilt here from the token store: the stage, and each rank's rows of each batch.
    from ekd_edge.distill.batches import BatchStream, MappedPairs

    pairs = MappedPairs.open(next(one.glob("pairs-*")))
    stream = BatchStream(pairs, SHARDED["batch_tokens"], SHARDED["seed"])
    steps = range(*STAGE)
    batches = {s: stream.indices(s) for s in steps}
    mine = {r: {s: [batches[s][i] for i in distributed.shard_range(len(batches[s]), r, 2)] for s in steps}
            for r in (0, 1)}
    stage = {p for s in steps for p in batches[s]}
    # The cases are exercised: the stage lies inside the first epoch and is shorter than it (pairs are
    # left out before and after it); every batch has a row for each rank (a rank left without one
    # would take the batch's first pair, which another rank holds too); some batches split unevenly.
    assert STAGE[1] < stream.steps_in_epoch(0) and 0 < STAGE[0]
    assert len(stage) == sum(map(len, batches.values())) < len(pairs)
    assert min(map(len, batches.values())) >= 2 and any(len(b) % 2 for b in batches.values())

    # One process: the reference, its shards hold exactly the stage's pairs.
    one_shards, one_rows = _shards_on_disk(one)
    assert solo["layout"] == "shards" and solo["passed_now"] == len(stage)
    assert sorted(p for _, _, ps in one_shards for p in ps) == sorted(stage)

    # Two ranks: every shard is named by its rank and holds only that rank's rows of the steps of its
    # window (windows of LOOKAHEAD steps counted from the stage's start, none past its end); together
    # they hold every pair of the stage exactly once, and no other pair.
    two_shards, two_rows = _shards_on_disk(two)
    assert {rank for rank, _, _ in two_shards} == {0, 1} and len(two_shards) > 2
    for rank, first, shard_pairs in two_shards:
        assert first in range(STAGE[0], STAGE[1], LOOKAHEAD)
        window = {p for s in range(first, min(first + LOOKAHEAD, STAGE[1])) for p in mine[rank][s]}
        assert shard_pairs and set(shard_pairs) <= window, (rank, first)
    for rank, (record, _) in enumerate(ranks):
        built = [p for r, _, ps in two_shards if r == rank for p in ps]
        assert sorted(built) == sorted(p for s in steps for p in mine[rank][s]), rank
        assert record["passed_now"] == len(built) and record["layout"] == "shards"
    every = [p for _, _, ps in two_shards for p in ps]
    assert len(every) == len(set(every)) == len(stage) and set(every) == stage
    for rank, (_, got) in enumerate(ranks):   # and each rank read its own rows back as it trained
        assert sorted(int(key.split("-")[0]) for key in got.files if key.endswith("-v")) == \
            sorted(p for s in steps for p in mine[rank][s])

    # The rows are those of one process, pair by pair (the shards are laid out differently). The
    # teacher sees each pair padded inside other batches: float32 round-off only, so the indices
    # agree wherever no two neighbouring values of a position's top k are within it.
    clear_positions = 0
    for p in sorted(stage):
        (v1, i1, t1), (v2, i2, t2) = one_rows[p], two_rows[p]
        assert v1.shape == v2.shape == (len(pairs.tgt[p]), SHARDED["k"])
        np.testing.assert_allclose(v2, v1, rtol=0, atol=1e-5)
        np.testing.assert_allclose(t2, t1, rtol=0, atol=1e-5)
        clear = (np.diff(v1, axis=1) < -2e-5).all(axis=1)
        assert np.array_equal(i1[clear], i2[clear]), p
        clear_positions += int(clear.sum())
    assert clear_positions > 0.9 * sum(len(pairs.tgt[p]) for p in stage)

    # Afterwards one process opens the same stage over the two ranks' cache as a stage does
    # (open_teacher_cache picks the layout): it passes the teacher over nothing and adds no shard,
    # it read both ranks' shards, and its rows are theirs.
    [(again, again_rows)] = _run_sharded_worker(tmp_path, "again-out", two, tokenizer_dir, nano_checkpoint, 1, 0)
    assert again["class"] == "ShardedTeacherCache" and again["passed_now"] == 0
    assert _shards_on_disk(two)[0] == two_shards
    assert again["shards"] == len(two_shards) and again["cached_pairs"] == len(stage)
    for p in stage:
        assert all(np.array_equal(again_rows[f"{p}-{n}"], a) for n, a in zip("vit", two_rows[p])), p

    # Nothing but finished shards and meta.json: no staging directory, no temporary file.
    for root in (one, two):
        (directory,) = root.glob("teacher-*-shards")
        assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("shard-")) == ["meta.json"]
        assert not [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
        for shard in directory.glob("shard-*"):
            assert sorted(f.name for f in shard.iterdir()) == sorted(
                f"{n}.npy" for n in ("indices", "offsets", "pairs", "tail", "values"))


def test_a_single_process_picks_its_device_and_says_why_it_cannot(monkeypatch):
    import torch

    from ekd_edge.distill.distributed import DEVICE_ENV, single_device
    from ekd_edge.errors import EkdError

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert single_device() == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(EkdError, match="expected cpu or cuda"):
        single_device()
    monkeypatch.delenv(DEVICE_ENV)
    assert single_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv(DEVICE_ENV, "cuda")
        with pytest.raises(EkdError, match="torch sees no CUDA device"):
            single_device()


def test_the_recipes_training_device_is_obeyed_and_the_environment_overrides_it(monkeypatch, tmp_path):
    from ekd_edge.distill.distributed import DEVICE_ENV, prefer_device, single_device
    from ekd_edge.errors import EkdError, RecipeError

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(distributed, "_context", None)
    try:
        prefer_device("cpu")
        assert single_device() == torch.device("cpu")
        assert distributed.context().device == torch.device("cpu")
        if not torch.cuda.is_available():
            prefer_device("cuda")   # the context built for "cpu" is dropped, and the new choice checked
            with pytest.raises(EkdError, match="training device cuda was asked for"):
                distributed.context()
            monkeypatch.setenv(DEVICE_ENV, "cpu")   # the environment wins over the recipe
            assert single_device() == torch.device("cpu")
        with pytest.raises(EkdError, match="expected one of auto, cpu, cuda"):
            prefer_device("gpu")
    finally:
        prefer_device("auto")
        monkeypatch.setattr(distributed, "_context", None)
    bad = RECIPE.replace("[training]\n", '[training]\ndevice = "gpu"\n', 1)
    with pytest.raises(RecipeError, match="device must be auto, cpu or cuda"):
        parse_recipe(tomllib.loads(bad), "bad.toml")


def test_precision_is_bf16_on_cuda_only_and_bf16_on_the_cpu_is_refused(monkeypatch):
    from ekd_edge.distill.distributed import bf16, place_teacher, prefer_precision
    from ekd_edge.errors import EkdError, RecipeError
    from ekd_edge.models import build_model

    cpu = torch.device("cpu")
    try:
        prefer_precision("auto")
        assert bf16(cpu) is False and bf16(torch.device("cuda", 0)) is True
        teacher = place_teacher(build_model("nano", 100, seed=0).train(), cpu)
        assert not teacher.training and next(teacher.parameters()).dtype == torch.float32
        prefer_precision("fp32")
        assert bf16(torch.device("cuda", 0)) is False
        prefer_precision("bf16")
        with pytest.raises(EkdError, match="needs a CUDA device"):
            bf16(cpu)
        with pytest.raises(EkdError, match="expected one of auto, fp32, bf16"):
            prefer_precision("fp16")
    finally:
        prefer_precision("auto")
    bad = RECIPE.replace("[training]\n", '[training]\ndevice = "cpu"\nprecision = "bf16"\n', 1)
    with pytest.raises(RecipeError, match="precision = \"bf16\" needs device"):
        parse_recipe(tomllib.loads(bad), "bad.toml")


def _hand_launched(argv: list[str], cwd, ranks: int = 2, timeout: int = 120) -> list[tuple[int, str, str]]:
    """Start ``ranks`` processes the way Slurm's srun or a shell loop does: RANK and WORLD_SIZE in the
    environment and no torchrun agent, which would kill the other ranks when one fails. Each one's
    (exit status, stdout, stderr); a rank still waiting after ``timeout`` seconds fails the test."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**ENV, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(ranks),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for r in range(ranks)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


WAITING_WORKER = """
import sys
from ekd_edge.distill import distributed
from ekd_edge.errors import EkdError

rank = distributed.context().rank
for failing in ((), (1,), (0, 1), (0,)):
    try:
        with distributed.waiting_for_main():
            if rank in failing:
                raise EkdError(f"met by rank {rank}")
        print(failing, "passed")
    except EkdError as exc:
        print(failing, type(exc).__name__, exc)
distributed.shutdown()
"""


def test_a_failure_inside_rank_0s_work_stops_every_rank_with_the_right_words(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WAITING_WORKER)
    (code0, out0, err0), (code1, out1, err1) = _hand_launched([sys.executable, str(script)], tmp_path)
    assert code0 == code1 == 0, err0[-2000:] + err1[-2000:]
    assert out0.splitlines() == [
        "() passed",
        "(1,) OtherRankError rank 1 stopped with an error; rank 0 stops too",
        "(0, 1) EkdError met by rank 0",
        "(0,) EkdError met by rank 0"]
    assert out1.splitlines() == [
        "() passed",
        "(1,) RankError rank 1: met by rank 1",   # its own, and only it met it: it says so
        "(0, 1) OtherRankError rank 0 stopped with an error; rank 1 stops too",   # rank 0 says it
        "(0,) OtherRankError rank 0 stopped with an error; rank 1 stops too"]


def test_a_corpus_error_on_rank_0_ends_every_rank_without_torchrun(tmp_path):
    """Rank 0 alone reads the corpus; an empty line it meets ends rank 1 as an input error too, not as a
    crash at a barrier whose peer has gone (exit 1, which rank 1 met before waiting_for_main)."""
    from ekd_edge.data import load_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lo = load_corpus("lo-help-en-de")
    for split, n in (("train", 40), ("valid", 8), ("test", 8)):
        text = lo.split(split).head(n)
        tgt = list(text.tgt)
        if split == "train":
            tgt[29] = "  "
        (corpus / f"{split}.en").write_text("\n".join(text.src) + "\n")
        (corpus / f"{split}.de").write_text("\n".join(tgt) + "\n")
    recipe_file = tmp_path / "ddp.toml"
    recipe_file.write_text(RECIPE.replace('corpus = "lo-help-en-de"', f'corpus = "{corpus}"\nsrc_lang = "en"\n'
                                                                      'tgt_lang = "de"'))
    (code0, _, err0), (code1, out1, err1) = _hand_launched(
        [sys.executable, "-m", "ekd_edge", "distill", str(recipe_file), "--run-dir", str(tmp_path / "run")], tmp_path)
    assert code0 == code1 == 2, err0[-2000:] + err1[-2000:]
    errors = [line for line in err0.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {corpus / 'train.de'}:30: empty line (use empty='skip' to drop such pairs)"], err0
    assert "Traceback" not in err0 + err1 and not (out1 + err1).strip()   # rank 1 leaves the telling to rank 0
