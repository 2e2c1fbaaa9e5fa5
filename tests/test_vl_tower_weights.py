"""The packaged vision-tower weights survive the wrapper: post_init() must not re-initialise them and
no forward (the token count probe in training mode included) may touch the frozen BatchNorm statistics.

Both happened once: the wrapper's tower then returned ~1e-22 for every image and the VL systems
learned easy-VQA from the question text alone.
"""
import torch

import zoo  # noqa: F401  (registers the configs with the Auto classes)
from zoo.multimodal.modeling import DEFAULT_VISION_TOWER, MultimodalMoeConfig, MultimodalMoeForConditionalGeneration
from zoo.multimodal.vision_towers import build_vision_tower

LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}


def test_wrapper_tower_equals_the_standalone_packaged_tower(tmp_path):
    reference = build_vision_tower(DEFAULT_VISION_TOWER).eval()
    config = MultimodalMoeConfig(text_config=LLAMA, vision_tower=DEFAULT_VISION_TOWER, image_token_id=63)
    model = MultimodalMoeForConditionalGeneration(config)
    pixels = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(pixels)  # [3, 16, 1280]
        assert expected.abs().mean() > 0.05  # a real feature map, not the re-initialised one
        model.train()
        model.num_image_tokens()  # a forward of the tower while the wrapper is in training mode
        torch.testing.assert_close(model.vision_tower(pixels), expected, rtol=0, atol=0)
        # the image features differ from image to image (the dead tower gave one constant row)
        features = model.image_features(pixels).mean(1)  # [3, H]
        assert (features[0] - features[1]).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    loaded = MultimodalMoeForConditionalGeneration.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.vision_tower(pixels), expected, rtol=0, atol=0)
