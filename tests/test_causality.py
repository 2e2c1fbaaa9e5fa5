"""Every multimodal system keeps its language model causal, however it is built: from a config, around a
loaded LLM whose config object the system's config shares (MoME's recipe did this, and the shared object
lost its attention implementation: the decoder built no causal mask and training learned to copy the
answer), and from a saved folder. Probe: change only the last token; no earlier position's logits may move."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import zoo  # noqa: F401  (Auto registrations)
from tests import tiny_mome, tiny_unimoe
from tests.tiny_systems import LLAMA, TOWER
from zoo.models.mome import MomeConfig, MomeForSpeechRecognition
from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration
from zoo.models.unimoe import UniMoeConfig, UniMoeForConditionalGeneration

LEAK_TOLERANCE = 1e-3  # float noise (3e-5 on the real SmolLM2, whose logits reach ~30); a leak moved them by 0.03-16


def future_token_leak(model) -> float:
    """Largest change of the logits at positions 0..L-2 when only the last (text) token changes."""
    vocab = model.get_input_embeddings().weight.shape[0]
    special = {getattr(model.config, name, None) for name in ("image_token_id", "audio_token_id", "video_token_id")}
    ids = torch.randint(7, vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    for token in special - {None}:  # text only: no media to splice
        ids[ids == token] = 7
    changed = ids.clone()
    changed[0, -1] = 5 if int(ids[0, -1]) != 5 else 6
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    return float((a[0, :-1] - b[0, :-1]).abs().max())


def mome():
    processor = tiny_mome.tiny_processor()
    return MomeForSpeechRecognition, tiny_mome.tiny_config(processor), {}


def unimoe():
    processor = tiny_unimoe.tiny_processor()
    return UniMoeForConditionalGeneration, tiny_unimoe.tiny_config(processor), {}


def moiie():
    return MoiieForConditionalGeneration, MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=63), \
        {"load_tower_weights": False}


def moe_llava():
    return MoeLlavaForConditionalGeneration, MoeLlavaConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=63), \
        {"load_tower_weights": False}


@pytest.mark.parametrize("system", [mome, unimoe, moiie, moe_llava], ids=lambda f: f.__name__)
def test_the_language_model_stays_causal_however_the_system_is_built(system, tmp_path):
    model_class, config, kwargs = system()
    torch.manual_seed(0)
    built = model_class(config, **kwargs).eval()
    llm = AutoModelForCausalLM.from_config(config.text_config, attn_implementation="sdpa")
    shared = type(config)(**{**config.to_dict(), "text_config": llm.config})  # the config object is shared
    around = model_class(shared, language_model=llm, **kwargs).eval()
    built.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    for name, model in (("from a config", built), ("around a loaded LLM", around), ("from_pretrained", loaded)):
        assert model.language_model.config._attn_implementation is not None, name
        assert future_token_leak(model) < LEAK_TOLERANCE, name
