"""MoVA's coarse routing text -> expert mask (any answer, junk -> base only) and the paper's routing labels."""
import pytest
import torch

from zoo.models.mova import parse_routing_answer, routing_labels, routing_mask

LETTERS = list("ABCDEFG")
NAMES = ["DINOv2", "Vary", "Co-DETR", "Pix2Struct", "Deplot", "BiomedCLIP", "SAM"]


@pytest.mark.parametrize("answer, chosen", [
    ("A", [0]), ("B, D", [1, 3]), ("b,d", [1, 3]), ("(C)", [2]), ("C.", [2]), ("A. DINOv2, G. SAM", [0, 6]),
    ("D, A, F", [3, 0, 5]), ("A and C", [0, 2]), ("A C", [0, 2]), ("B; E", [1, 4]), ("Vary, SAM", [1, 6]),
    ("A, A, B", [0, 1]),  # a repeat counts once
    ("A, B, C, D, E", [0, 1, 2]),  # the first 3 items only (the release's rule)
    ("X, B", [1]),  # an unknown letter is skipped, still one of the first 3 items
    ("  g  ", [6]),
])
def test_a_routing_answer_maps_its_first_three_items_to_experts(answer, chosen):
    assert parse_routing_answer(answer, LETTERS, NAMES) == chosen


JUNK = ["", " ", "none", "None.", "NONE of them", "no models", "nothing", "I don't know", "Apple, Banana", "Hello world",
        "12345", "!!!", ",,,", "\n\n", "🙂", "A" * 10_000, "ZZZ", "H, I, J", "<unk> <unk>", "\x00\x01", "(((", "none, A",
        "Answer:", "model", "the best model", "\ufffd\ufffd", "AB", "a" + "," * 1000, "      ,      ", "\t"]


@pytest.mark.parametrize("answer", JUNK)
def test_junk_routing_answers_mean_the_base_encoder_alone_and_never_raise(answer):
    chosen = parse_routing_answer(answer, LETTERS, NAMES)
    assert isinstance(chosen, list) and len(chosen) <= 3 and all(0 <= i < 7 for i in chosen)
    if answer not in ("a" + "," * 1000,):
        assert chosen == [], answer


def test_random_byte_strings_never_crash_the_parser():
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        raw = bytes(torch.randint(0, 256, (int(torch.randint(0, 40, (1,), generator=generator)),), generator=generator).tolist())
        chosen = parse_routing_answer(raw, LETTERS, NAMES)
        assert len(chosen) <= 3 and len(set(chosen)) == len(chosen)


def test_a_non_text_answer_is_a_type_error_naming_what_was_given():
    with pytest.raises(TypeError, match="must be text.*int"):
        parse_routing_answer(3, LETTERS)
    with pytest.raises(TypeError, match="one answer per sample"):
        routing_mask("A, B", LETTERS)


def test_routing_mask_has_one_row_per_answer():
    mask = routing_mask(["A, C", "junk", "none", "G"], LETTERS)
    expected = torch.zeros(4, 7, dtype=torch.bool)
    expected[0, [0, 2]] = True
    expected[3, 6] = True
    assert torch.equal(mask, expected)


def test_routing_labels_mark_experts_whose_loss_beats_the_base_alone_at_most_three():
    expert = torch.tensor([[1.0, 3.0, 0.5, 1.9, 0.2],   # base 2.0: experts 0, 2, 3, 4 help; keep the best 3
                           [5.0, 5.0, 5.0, 5.0, 5.0],   # base 1.0: none helps
                           [0.9, 0.9, 2.0, 0.9, 0.9]])  # base 1.0: four tie; the lower indices win
    base = torch.tensor([2.0, 1.0, 1.0])
    labels = routing_labels(expert, base)
    naive = torch.zeros(3, 5, dtype=torch.bool)
    for i in range(3):
        useful = sorted((base[i] - expert[i, j], -j) for j in range(5) if expert[i, j] < base[i])
        for _, j in sorted(useful, reverse=True)[:3]:
            naive[i, -j] = True
    assert torch.equal(labels, naive)
    assert labels.tolist()[0] == [True, False, True, False, True]
    assert labels.tolist()[2] == [True, True, False, True, False]
    assert not routing_labels(torch.tensor([[2.0]]), torch.tensor([2.0])).any()  # equal is not better


def test_routing_labels_refuse_bad_losses():
    with pytest.raises(ValueError, match="base_losses"):
        routing_labels(torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="3 samples of expert losses but 2"):
        routing_labels(torch.zeros(3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        routing_labels(torch.full((1, 2), float("nan")), torch.zeros(1))
