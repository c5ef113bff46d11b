"""Copy-weight initialisation from a real teacher: layer maps, exact copies, width errors."""

import pytest
import torch

from ekd_edge.distill.copy_init import copy_init, layer_map, parse_init
from ekd_edge.errors import RecipeError
from ekd_edge.models import build_model

WIDE = {"d_model": 32, "encoder_layers": 4, "decoder_layers": 4, "attention_heads": 2, "ffn_dim": 64}
NARROW = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 2, "ffn_dim": 64}


def test_layer_maps():
    assert layer_map("every_other", 6, 3) == [0, 2, 5]
    assert layer_map("every_other", 4, 2) == [0, 3]
    assert layer_map("every_other", 4, 3) == [0, 2, 3]
    assert layer_map("first", 6, 2) == [0, 1]
    assert layer_map([1, 3], 4, 2) == [1, 3]
    with pytest.raises(RecipeError, match="2 teacher layers"):
        layer_map([1, 7], 4, 2)
    with pytest.raises(RecipeError, match="only 2"):
        layer_map("first", 2, 3)


def test_parse_init():
    assert parse_init("warm") is None
    assert parse_init("copy:every_other") == "every_other"
    assert parse_init("copy:0,3") == [0, 3]
    with pytest.raises(RecipeError, match="copy:"):
        parse_init("clone")


def test_copied_student_holds_the_teachers_layers_and_translates_alike():
    teacher = build_model(WIDE, vocab_size=400, seed=1, max_positions=64).eval()
    student = build_model(NARROW, vocab_size=400, seed=2, max_positions=64).eval()
    maps = copy_init(student, teacher, "every_other")
    assert maps == {"encoder": [0, 3], "decoder": [0, 3]}
    for s_idx, t_idx in enumerate(maps["decoder"]):
        for (name, p), (_, q) in zip(student.model.decoder.layers[s_idx].named_parameters(),
                                     teacher.model.decoder.layers[t_idx].named_parameters()):
            assert torch.equal(p, q), name
    assert torch.equal(student.model.shared.weight, teacher.model.shared.weight)
    # a student with the same layers as the teacher (map "first" onto an equal depth) is the teacher
    twin = build_model(WIDE, vocab_size=400, seed=3, max_positions=64).eval()
    copy_init(twin, teacher, "first")
    ids = torch.tensor([[5, 6, 7, 0]])
    dec = torch.tensor([[58, 9, 10]])
    assert torch.allclose(twin(input_ids=ids, decoder_input_ids=dec).logits,
                          teacher(input_ids=ids, decoder_input_ids=dec).logits)


def test_width_mismatch_is_a_clear_error():
    teacher = build_model(WIDE, vocab_size=400, seed=1, max_positions=64)
    student = build_model({**NARROW, "d_model": 16, "ffn_dim": 32}, vocab_size=400, seed=2, max_positions=64)
    with pytest.raises(RecipeError, match="d_model 16 vs 32.*init = \"warm\""):
        copy_init(student, teacher)
