"""The vision-language processor as a transformers processor: save_pretrained -> AutoProcessor.from_pretrained
gives the same processor (and the same model inputs on real easy-VQA images) for every VL model type, offline."""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import zoo  # noqa: F401  (registers the VL model types with AutoProcessor / AutoImageProcessor)
from zoo.integrations.assets import IMAGENET_MEAN_STD
from zoo.models.moe_llava import MoeLlavaConfig
from zoo.models.moiie import MoiieConfig
from zoo.models.mote import MoteConfig
from zoo.multimodal.processing import IMAGE_TOKEN, VisionLanguageImageProcessor, VisionLanguageProcessor
from zoo.multimodal.modeling import MultimodalMoeConfig

CONFIGS = [MoiieConfig, MoteConfig, MoeLlavaConfig, MultimodalMoeConfig]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MEAN, STD = IMAGENET_MEAN_STD


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from zoo.integrations.assets import load_smollm2, smollm2_cache_path

    if not (smollm2_cache_path() / "conversion-complete.txt").is_file():
        load_smollm2(progress=False)
    return AutoTokenizer.from_pretrained(smollm2_cache_path())


@pytest.fixture(scope="module")
def easyvqa_pair():
    """Two real easy-VQA test images and their questions."""
    import easy_vqa

    questions, _, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    return [paths[image_ids[i]] for i in (0, 1)], [questions[i] for i in (0, 1)]


def reference_pixels(path, size: int) -> torch.Tensor:
    """[3, size, size]: RGB, bicubic resize, /255, (x - mean) / std per channel, by hand."""
    array = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    out = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        out[c] = (array[:, :, c] - MEAN[c]) / STD[c]
    return torch.from_numpy(out)


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.model_type)
def test_auto_processor_round_trip_gives_the_same_inputs(config_class, tokenizer, easyvqa_pair, tmp_path):
    processor = VisionLanguageProcessor(tokenizer, 64, MEAN, STD, num_image_tokens=4, chat_template=CHAT_TEMPLATE)
    config_class().save_pretrained(tmp_path)  # a model folder: config.json next to the processor files
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)

    assert type(loaded) is VisionLanguageProcessor
    assert isinstance(loaded.image_processor, VisionLanguageImageProcessor)
    assert loaded.to_dict() == processor.to_dict()
    assert (loaded.image_size, loaded.image_mean, loaded.image_std) == (64, MEAN, STD)
    assert loaded.num_image_tokens == 4 and loaded.image_token_id == processor.image_token_id
    assert loaded.chat_template == CHAT_TEMPLATE and loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is VisionLanguageImageProcessor

    paths, questions = easyvqa_pair
    prompts = [processor.prompt(q) for q in questions]
    assert prompts == [loaded.prompt(q) for q in questions]
    want, got = processor(images=paths, text=prompts), loaded(images=paths, text=prompts)
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(got[key], want[key]), key
    assert got["pixel_values"].shape == (2, 3, 64, 64)
    for row, path in enumerate(paths):
        torch.testing.assert_close(got["pixel_values"][row], reference_pixels(path, 64), atol=1e-5, rtol=0)
        ids = got["input_ids"][row][got["attention_mask"][row].bool()]
        assert int((ids == loaded.image_token_id).sum()) == 4
        expanded = prompts[row].replace(IMAGE_TOKEN, IMAGE_TOKEN * 4)
        assert ids.tolist() == tokenizer(expanded, add_special_tokens=False)["input_ids"]

    # the loaded processor keeps the checks
    with pytest.raises(ValueError, match="1 image\\(s\\) given but the text has 2"):
        loaded(images=paths[:1], text=prompts)
    with pytest.raises(ValueError, match="not an image"):
        loaded(images=[b"plain text"], text=prompts[:1])


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.model_type)
def test_model_folder_without_processor_files_is_a_clear_error(config_class, tmp_path):
    config_class().save_pretrained(tmp_path)  # AutoProcessor finds the processor class through the model type
    with pytest.raises(FileNotFoundError, match="processor_config.json not found.*no saved VisionLanguageProcessor"):
        AutoProcessor.from_pretrained(tmp_path)


def test_empty_folder_and_bad_settings_are_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="Unrecognized processing class"):
        AutoProcessor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_image_tokens must be positive"):
        VisionLanguageProcessor(tokenizer, 64, MEAN, STD, num_image_tokens=0)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        VisionLanguageImageProcessor(image_size=0)
    with pytest.raises(ValueError, match="image_mean and image_std need 3 values"):
        VisionLanguageImageProcessor(image_size=32, image_mean=(0.5,))
    with pytest.raises(ValueError, match="given twice"):
        VisionLanguageProcessor(tokenizer, VisionLanguageImageProcessor(32), MEAN, STD)
    processor = VisionLanguageProcessor(tokenizer, 64, MEAN, STD)
    with pytest.raises(ValueError, match="returns PyTorch tensors only: return_tensors must be 'pt', got 'np'"):
        processor(text="hello", return_tensors="np")
    with pytest.raises(ValueError, match="padding must be True or 'longest', got 'max_length'"):
        processor(text="hello", padding="max_length")
