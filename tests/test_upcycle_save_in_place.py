"""No silent loss (issue 13): a transformers model upcycled in place by `zoo.upcycle` keeps its dense config, so its own
`save_pretrained` would write a folder that `AutoModelForCausalLM` reloads as the dense model without the experts
(transformers only warns about the unexpected keys). It now saves as UpcycledMoeForCausalLM, which reloads with
every expert, or refuses naming the fix when the model has no LM head."""
import copy
import json

import pytest
import torch
from tiny_decoders import tiny_decoder, token_ids
from transformers import AutoModelForCausalLM, LlamaModel

import zoo
from zoo.models.upcycled import UpcycledMoeForCausalLM


def upcycled_in_place(arch: str = "llama"):
    model = zoo.upcycle(tiny_decoder(arch), "top2-of-4").eval()
    with torch.no_grad():  # experts that differ, so a reload that dropped them would change the logits
        generator = torch.Generator().manual_seed(0)
        for name, weight in model.named_parameters():
            if ".moe." in name:
                weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2"])
def test_save_pretrained_of_an_in_place_upcycled_model_reloads_with_its_experts(tmp_path, arch):
    model = upcycled_in_place(arch)
    ids = token_ids()
    expected = model(ids).logits
    dense_logits = tiny_decoder(arch)(ids).logits
    assert (expected - dense_logits).abs().max() > 1e-3  # the experts matter
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "zoo_upcycled_moe"
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is UpcycledMoeForCausalLM
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded.eval()(ids).logits, expected, atol=1e-5, rtol=0)
    assert type(model).__name__ != "UpcycledMoeForCausalLM"  # the user's model object is left as it was
    torch.testing.assert_close(model(ids).logits, expected, atol=0, rtol=0)


def test_a_copy_saves_its_own_weights(tmp_path):
    model = upcycled_in_place()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, weight in twin.named_parameters():
            if "router" in name:  # a different top-2 for some tokens
                weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    twin.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = token_ids()
    torch.testing.assert_close(loaded(ids).logits, twin(ids).logits, atol=1e-5, rtol=0)
    assert (loaded(ids).logits - model(ids).logits).abs().max() > 1e-4


def test_a_bare_decoder_upcycled_in_place_refuses_to_save_naming_the_fix(tmp_path):
    bare = zoo.upcycle(LlamaModel(tiny_decoder("llama").config), "top2-of-4")
    with pytest.raises(ValueError, match="not a causal language model.*upcycle the task model"):
        bare.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_wrap_needs_an_upcycled_model():
    with pytest.raises(ValueError, match="no upcycled layers: call zoo.upcycle"):
        UpcycledMoeForCausalLM.wrap(tiny_decoder("llama"))
