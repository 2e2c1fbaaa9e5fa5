"""One tiny model per zoo model type, built from a config (random weights), with an example input and the
transformers Auto class of its task: the table the Hugging Face conformance tests run over
(tests/test_hf_conformance.py). A new model type joins by adding its row; a registered type without a row
fails there."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tests import tiny_mome, tiny_mova, tiny_unimoe
from tests.tiny_decoders import tiny_decoder, token_ids

TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 32}  # random weights: load_tower_weights=False
LLAMA = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 48,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}
IMAGE_ID = 63
MOFME = dict(head_channels=8, num_head_res_blocks=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_experts=4, num_experts_per_tok=2, decoder_channels=8, decoder_hidden_channels=8, hidden_dropout=0.0)


@dataclass(frozen=True)
class TinySystem:
    """build() -> a model in eval mode; inputs(model) -> forward kwargs; task: the Auto class users load it with."""

    model_type: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.nn.Module], dict]
    task: str


def _text_inputs(model) -> dict:
    return {"input_ids": token_ids()}


def _vl(config_class: str, model_class: str) -> Callable[[], torch.nn.Module]:
    def build():
        import importlib

        module = importlib.import_module({"MoiieConfig": "zoo.models.moiie", "MoteConfig": "zoo.models.mote",
                                          "MoeLlavaConfig": "zoo.models.moe_llava",
                                          "MultimodalMoeConfig": "zoo.multimodal.modeling"}[config_class])
        config = getattr(module, config_class)(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)
        return getattr(module, model_class)(config, load_tower_weights=False)
    return build


def _vl_inputs(model) -> dict:
    n = model.num_image_tokens()
    generator = torch.Generator().manual_seed(3)
    return {"input_ids": torch.tensor([[1, 2] + [IMAGE_ID] * n + [3, 4, 5]]),
            "pixel_values": torch.randn(1, 3, 32, 32, generator=generator)}


def _upcycled():
    from zoo.models.upcycled import UpcycledMoeForCausalLM

    return UpcycledMoeForCausalLM.from_dense(tiny_decoder(), "top2-of-4")


def _xmoe():
    from zoo.models.xmoe import XMoEConfig, XMoEForCausalLM

    return XMoEForCausalLM(XMoEConfig(text_config=tiny_decoder().config.to_dict()))


def _mofme():
    from zoo.models.mofme import MoFMEConfig, MoFMEForImageRestoration

    return MoFMEForImageRestoration(MoFMEConfig(**MOFME))


def _mofme_inputs(model) -> dict:
    return {"pixel_values": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))}


def _mome_inputs(model) -> dict:
    processor = tiny_mome.tiny_processor()
    batch = processor(text=[processor.prompt("transcribe the audio", "hello world")], audio=[tiny_mome.clip(0.7, seed=1)],
                      sampling_rate=16_000, compression_rate=4)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "input_features", "feature_lengths")}


def _unimoe_inputs(model) -> dict:
    processor = tiny_unimoe.tiny_processor()
    return dict(processor(text=[processor.prompt("what is it", media=("image", "audio"))], images=[tiny_unimoe.image(1)],
                          audio=[tiny_mome.clip(0.6, seed=3)], sampling_rate=16_000))


def _mova():
    return tiny_mova.tiny_model(seed=1)[0]


def _mova_inputs(model) -> dict:
    _, processor = tiny_mova.tiny_model(seed=1)
    return dict(processor(images=[tiny_mova.image(0)], questions=["what colour"]))


SYSTEMS: dict[str, TinySystem] = {s.model_type: s for s in (
    TinySystem("zoo_upcycled_moe", _upcycled, _text_inputs, "AutoModelForCausalLM"),
    TinySystem("xmoe", _xmoe, _text_inputs, "AutoModelForCausalLM"),
    TinySystem("moiie", _vl("MoiieConfig", "MoiieForConditionalGeneration"), _vl_inputs, "AutoModelForImageTextToText"),
    TinySystem("mote", _vl("MoteConfig", "MoteForConditionalGeneration"), _vl_inputs, "AutoModelForImageTextToText"),
    TinySystem("moe_llava", _vl("MoeLlavaConfig", "MoeLlavaForConditionalGeneration"), _vl_inputs,
               "AutoModelForImageTextToText"),
    TinySystem("dense_vl", _vl("MultimodalMoeConfig", "MultimodalMoeForConditionalGeneration"), _vl_inputs,
               "AutoModelForImageTextToText"),
    TinySystem("mofme", _mofme, _mofme_inputs, "AutoModelForImageToImage"),
    TinySystem("mome", lambda: tiny_mome.tiny_model(seed=1), _mome_inputs, "AutoModelForSpeechSeq2Seq"),
    TinySystem("unimoe", lambda: tiny_unimoe.tiny_model(seed=1), _unimoe_inputs, "AutoModelForImageTextToText"),
    TinySystem("mova", _mova, _mova_inputs, "AutoModelForImageTextToText"),
)}


def built(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SYSTEMS[model_type].build().eval()


def main_output(out) -> torch.Tensor:
    """The tensor a round trip must reproduce: logits, or the restored image."""
    for name in ("logits", "reconstruction", "restored", "pixel_values"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"{type(out).__name__} has no logits / restored image field")
