"""Modality ids the caller passes to the vision-language wrapper (issue 14): with input_ids they were
silently replaced by the ids the placeholders give, so transposed, flattened or off-by-one ids (or ids
of the wrong dtype) went unnoticed; now every wrong shape or dtype is a ValueError / TypeError naming
the expected shape, ids that contradict input_ids are refused, and cached decoding (ids for the new
tokens only) keeps working."""
import re

import pytest
import torch

from tests.test_vl_generate import build, prompt

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def moiie():
    model = build("moiie")  # modality router: image and text tokens reach different experts
    ids = torch.tensor([prompt(model, [5, 6], [7, 8, 9])])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    assert (out.modality_ids == 1).any() and (out.modality_ids == 0).any()
    return model, ids, pixels, out


WRONG_SHAPES = {
    "transposed": lambda good: good.T,
    "flattened": lambda good: good.reshape(-1),
    "one short": lambda good: good[:, :-1],
    "one long": lambda good: torch.cat([good, good[:, :1]], dim=1),
    "batched twice": lambda good: good.expand(2, -1),
}


@pytest.mark.parametrize("path", ["input_ids", "inputs_embeds"])
@pytest.mark.parametrize("wrong", list(WRONG_SHAPES))
def test_modality_ids_of_the_wrong_shape_are_refused_naming_the_shape(moiie, wrong, path):
    model, ids, pixels, out = moiie
    bad = WRONG_SHAPES[wrong](out.modality_ids)
    expected = (re.escape(f"MoiieForConditionalGeneration.modality_ids must have shape (1, {ids.shape[1]})") + ".*"
                + re.escape(f"got {tuple(bad.shape)}"))
    with torch.no_grad(), pytest.raises(ValueError, match=expected):
        if path == "input_ids":
            model(input_ids=ids, pixel_values=pixels, modality_ids=bad)
        else:
            embeds, _ = model.embed(ids, pixels)
            model(inputs_embeds=embeds, modality_ids=bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_modality_ids_that_are_not_integers_are_refused(moiie, dtype):
    model, ids, pixels, out = moiie
    with torch.no_grad(), pytest.raises(TypeError, match=f"modality_ids must be an integer tensor, got dtype {dtype}"):
        model(input_ids=ids, pixel_values=pixels, modality_ids=out.modality_ids.to(dtype))


def test_ids_that_call_the_image_text_are_refused_not_replaced(moiie):
    model, ids, pixels, out = moiie
    all_text = torch.zeros_like(out.modality_ids)
    n_image = int((out.modality_ids == 1).sum())
    with torch.no_grad(), pytest.raises(ValueError, match=f"disagree with the image placeholders of input_ids at {n_image} positions"):
        model(input_ids=ids, pixel_values=pixels, modality_ids=all_text)


def test_the_right_ids_given_explicitly_change_nothing(moiie):
    model, ids, pixels, out = moiie
    with torch.no_grad():
        explicit = model(input_ids=ids, pixel_values=pixels, modality_ids=out.modality_ids.clone())
        embeds, _ = model.embed(ids, pixels)
        from_embeds = model(inputs_embeds=embeds, modality_ids=out.modality_ids.clone())
    torch.testing.assert_close(explicit.logits, out.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_embeds.logits, out.logits)


def test_cached_decoding_with_ids_for_the_new_token_only(moiie):
    model, ids, pixels, out = moiie
    with torch.no_grad():
        prefill = model(input_ids=ids, pixel_values=pixels, use_cache=True)
        new = prefill.logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
        step = model(input_ids=new, past_key_values=prefill.past_key_values, use_cache=True,
                     modality_ids=torch.zeros_like(new))
        whole = model(input_ids=torch.cat([ids, new], dim=1), pixel_values=pixels)
    torch.testing.assert_close(step.logits[:, -1], whole.logits[:, -1], atol=1e-4, rtol=1e-4)
    with torch.no_grad(), pytest.raises(ValueError, match=r"must have shape \(1, 1\).*the new tokens only"):
        model(input_ids=new, past_key_values=model(input_ids=ids, pixel_values=pixels, use_cache=True).past_key_values,
              use_cache=True, modality_ids=torch.zeros(1, ids.shape[1] + 1, dtype=torch.long))
