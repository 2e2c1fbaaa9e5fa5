"""Multimodal wrapper: vision towers, connectors, placeholder splicing, the processor, bad images."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.multimodal.connectors import Connector, pool_to_budget
from zoo.multimodal.processing import IMAGE_TOKEN, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, VisionLanguageProcessor, load_image, splice_image_features
from zoo.core.modalities import MODALITY_IDS
from zoo.multimodal.vision_towers import build_vision_tower


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from zoo.integrations.assets import load_smollm2, smollm2_cache_path

    if not (smollm2_cache_path() / "conversion-complete.txt").is_file():
        load_smollm2(progress=False)
    return AutoTokenizer.from_pretrained(smollm2_cache_path())


def test_mobilenet_tower_matches_torchvision_with_packaged_weights():
    import torchvision

    from zoo.multimodal.vision_towers import mobilenet_v2_weights_path

    tower = build_vision_tower({"kind": "timm", "name": "mobilenetv2_100", "image_size": 96, "weights": "mobilenet_v2"}).eval()
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_v2_weights_path(), weights_only=True))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        grid = reference.eval().features(x)  # [2, 1280, 3, 3]
        tokens = tower(x)
    assert tokens.shape == (2, 9, 1280)
    torch.testing.assert_close(tokens, grid.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_efficientnet_lite0_tower_classifies_a_real_photo():
    import timm
    from skimage import data

    tower = build_vision_tower({"kind": "timm", "name": "tf_efficientnet_lite0", "image_size": 224,
                                "weights": "efficientnet_lite0"}).eval()
    from zoo.multimodal.processing import preprocess_images
    from zoo.multimodal.vision_towers import efficientnet_lite0_weights_path

    pixels = preprocess_images([data.chelsea()], 224, tower.image_mean, tower.image_std)
    head = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = list(torch.load(efficientnet_lite0_weights_path(), weights_only=True).values())
    head.classifier.load_state_dict({"weight": source[-2], "bias": source[-1]})
    with torch.no_grad():
        tokens = tower(pixels)  # [1, 49, 1280]
        logits = head.classifier(tokens.mean(1))
    assert tokens.shape == (1, 49, 1280)
    assert int(logits.argmax()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_intermediate_feature_layer_matches_timm_features_only():
    import timm

    tower = build_vision_tower({"kind": "timm", "name": "mobilenetv2_100", "image_size": 64, "feature_layer": 3,
                                "weights": "mobilenet_v2"}).eval()
    reference = timm.create_model("mobilenetv2_100", features_only=True, out_indices=[3]).eval()
    reference.load_state_dict({k: v for k, v in zip(reference.state_dict(), tower.model.state_dict().values())}, strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference(x)[0]
        got = tower(x)
    assert tower.hidden_size == want.shape[1]
    torch.testing.assert_close(got, want.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("model_type", ["clip_vision_model", "siglip_vision_model"])
def test_hf_tower_takes_the_chosen_hidden_state(model_type):
    from transformers import AutoConfig, AutoModel

    spec = {"model_type": model_type, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
            "num_attention_heads": 2, "patch_size": 8, "image_size": 32}
    tower = build_vision_tower({"kind": "hf", "config": spec, "feature_layer": -2}).eval()
    reference = AutoModel.from_config(AutoConfig.for_model(**spec)).eval()
    reference.load_state_dict(tower.model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = reference(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        tokens = tower(x)
    want = hidden[:, 1:] if model_type == "clip_vision_model" else hidden  # CLIP's CLS is dropped
    assert tokens.shape == (2, 16, 32)
    torch.testing.assert_close(tokens, want)


def test_open_clip_tower_returns_the_chosen_block_without_cls():
    spec = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "heads": 2, "mlp_ratio": 2.0, "output_dim": 16}
    tower = build_vision_tower({"kind": "open_clip", "model": spec, "feature_layer": 1}).eval()
    captured = {}
    block = tower.visual.transformer.resblocks[1]
    handle = block.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tower.visual(x)  # the full forward, hooked
        tokens = tower(x)
    handle.remove()
    assert tokens.shape == (2, 16, 32)
    torch.testing.assert_close(tokens, captured["out"][:, 1:])


def test_bad_tower_specs_name_the_field():
    with pytest.raises(ValueError, match="kind"):
        build_vision_tower({"kind": "keras"})
    with pytest.raises(ValueError, match="fit timm model"):
        build_vision_tower({"kind": "timm", "name": "resnet18", "weights": "mobilenet_v2"})
    with pytest.raises(ValueError, match="feature_layer"):
        build_vision_tower({"kind": "timm", "name": "mobilenetv2_100", "feature_layer": 9})


def test_pool_to_budget_is_a_block_average():
    features = torch.randn(2, 16, 5)
    pooled = pool_to_budget(features, 4)
    grid = features.view(2, 4, 4, 5)
    for r in range(2):
        for c in range(2):
            block = grid[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(2, 4, 5).mean(1)
            torch.testing.assert_close(pooled[:, 2 * r + c], block)
    assert pool_to_budget(features, 32) is features
    with pytest.raises(ValueError, match="square"):
        pool_to_budget(torch.randn(1, 12, 3), 4)


def test_mlp2x_gelu_connector_has_llava_keys_and_math():
    connector = Connector("mlp2x_gelu", 6, 8, token_budget=4)
    assert set(connector.projector.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    x = torch.randn(1, 16, 6)
    p = connector.projector
    want = p[2](torch.nn.functional.gelu(p[0](pool_to_budget(x, 4))))
    torch.testing.assert_close(connector(x), want)
    with pytest.raises(ValueError, match="6-d"):
        connector(torch.randn(1, 16, 7))


def test_splice_matches_a_loop_and_sets_modality_ids():
    image_id = 9
    ids = torch.tensor([[1, 9, 9, 2, 3], [9, 9, 4, 9, 9]])
    text = torch.randn(2, 5, 3)
    features = torch.randn(3, 2, 3)
    embeds, modality = splice_image_features(ids, text, features, image_id)
    want, flat, k = text.clone(), features.reshape(-1, 3), 0
    for b in range(2):
        for s in range(5):
            if ids[b, s] == image_id:
                want[b, s] = flat[k]
                k += 1
    torch.testing.assert_close(embeds, want)
    assert modality.tolist() == [[0, 1, 1, 0, 0], [1, 1, 0, 1, 1]]
    assert MODALITY_IDS["image"] == 1
    with pytest.raises(ValueError, match="6 image placeholder tokens but 2 image"):
        splice_image_features(ids, text, features[:2], image_id)


def test_processor_expands_placeholders_and_checks_counts(tokenizer, tmp_path):
    processor = VisionLanguageProcessor(tokenizer, 32, (0.5,) * 3, (0.5,) * 3, num_image_tokens=4)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    batch = processor(images=[image], text=f"{IMAGE_TOKEN}\nwhat shape?")
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 4
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="2 image\\(s\\) given but the text has 1"):
        processor(images=[image, image], text=f"{IMAGE_TOKEN} hi")
    with pytest.raises(ValueError, match="0 image\\(s\\) given but the text has 1"):
        processor(images=None, text=f"{IMAGE_TOKEN} hi")
    processor.save_pretrained(tmp_path)
    again = VisionLanguageProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == processor.to_dict() and again.image_token_id == processor.image_token_id


def test_bad_images_get_clear_errors_and_huge_ones_are_shrunk(tmp_path):
    with pytest.raises(ValueError, match="not an image"):
        load_image(b"this is a text file, not a picture")
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="expected an image"):
        load_image(42)
    wide = Image.new("RGB", (MAX_IMAGE_SIDE * 2, 100), "red")
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    shrunk = load_image(buffer.getvalue())
    assert shrunk.size == (MAX_IMAGE_SIDE, 50)
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 10
    with pytest.raises(ValueError, match="pixels; refused"):
        load_image(Image.new("L", (side, side)))
