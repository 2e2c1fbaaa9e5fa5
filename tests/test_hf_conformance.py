"""Every model type the zoo registers is a Hugging Face citizen (issue 13), checked over one table of tiny
systems (tests/tiny_systems.py): a registered type without a row fails here, so a new system joins these
checks when it lands.

- whole-model round trip: `save_pretrained` writes config + safetensors (+ generation config for the
  generative ones), and a fresh process that only imports zoo loads the folder with `AutoModel` and with
  the task's Auto class, giving the same class and the same outputs (to float rounding: the same weights and
  buffers, but a timm tower's convolutions may take another oneDNN kernel in a loaded model; measured 3e-8 for
  MoIIE, 1.5e-6 for MoVA, the first differing module a pointwise conv whose inputs and weights are equal).
- PEFT: `peft.get_peft_model(model, zoo.lora.lora_config(model, "attention+experts"))` trains a few steps,
  the adapter saved and loaded on a fresh base gives the trained outputs, and so does the merged model.
- pipelines: `transformers.pipeline(task, model=folder)` with the task name users know answers with what
  greedy `generate()` gives (text-generation, image-text-to-text, automatic-speech-recognition)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import tiny_mome, tiny_mova, tiny_unimoe
from tests.tiny_decoders import tiny_decoder
from tests.tiny_systems import SYSTEMS, built, main_output
from zoo.auto_registration import MODEL_PACKAGES

pytestmark = pytest.mark.usefixtures("single_thread")
ALIASES = {"vl_dense"}  # the dense baseline's old spelling: configs only, its checkpoints load as dense_vl
GENERATIVE = {"zoo_upcycled_moe", "xmoe", "moiie", "mote", "moe_llava", "dense_vl", "mome", "unimoe", "mova"}

FRESH_PROCESS = r"""
import json, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
import zoo  # registers the zoo's model types; nothing else of the test process is here
import transformers
from tests.tiny_systems import main_output

root = Path(sys.argv[1])
report = {}
for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    entry = report.setdefault(folder.name, {})
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    task = json.loads((folder / "task.json").read_text())["task"]
    for auto in ("AutoModel", task):
        try:
            model = getattr(transformers, auto).from_pretrained(folder).eval()
            with torch.no_grad():
                torch.save(main_output(model(**inputs)), folder / f"output-{auto}.pt")
            entry[auto] = f"{type(model).__module__}.{type(model).__qualname__}"
        except Exception as error:
            entry[auto] = "error: " + "".join(traceback.format_exception_only(error)).strip()
print(json.dumps(report))
"""


def test_every_registered_model_type_has_a_tiny_system():
    assert set(MODEL_PACKAGES) - ALIASES == set(SYSTEMS), "add the new model type to tests/tiny_systems.py"


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Every tiny system saved (with its inputs and its outputs here), then loaded in one fresh process."""
    root = tmp_path_factory.mktemp("round-trip")
    expected = {}
    for model_type, system in SYSTEMS.items():
        model = built(model_type)
        inputs = system.inputs(model)
        folder = root / model_type
        model.save_pretrained(folder)
        torch.save(inputs, folder / "inputs.pt")
        (folder / "task.json").write_text(json.dumps({"task": system.task}))
        with torch.no_grad():
            expected[model_type] = (type(model), main_output(model(**inputs)))
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(root)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, expected, json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model_type", sorted(SYSTEMS))
def test_whole_model_round_trip_through_auto_classes_in_a_fresh_process(round_trip, model_type):
    root, expected, loaded = round_trip
    model_class, output = expected[model_type]
    folder = root / model_type
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    if model_type in GENERATIVE:
        assert (folder / "generation_config.json").is_file()
    for auto in ("AutoModel", SYSTEMS[model_type].task):
        assert loaded[model_type][auto] == f"{model_class.__module__}.{model_class.__qualname__}", (auto, loaded[model_type][auto])
        torch.testing.assert_close(torch.load(folder / f"output-{auto}.pt", weights_only=True), output, rtol=1e-5, atol=1e-5)


NO_LORA_TARGETS_YET: dict[str, str] = {}  # model type -> why it has no LoRA targets yet (a strict xfail)


def outputs(model, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return main_output(model(**inputs)).float()


@pytest.mark.parametrize("model_type", [
    pytest.param(t, marks=pytest.mark.xfail(reason=NO_LORA_TARGETS_YET[t], strict=True)) if t in NO_LORA_TARGETS_YET
    else t for t in sorted(SYSTEMS)])
def test_peft_lora_trains_saves_reloads_on_a_fresh_base_and_merges(model_type, tmp_path):
    import peft

    import zoo

    base = built(model_type)
    inputs = SYSTEMS[model_type].inputs(base)
    before = outputs(base, inputs)
    tuned = peft.get_peft_model(base, zoo.lora.lora_config(base, "attention+experts", r=2))
    assert 0 < sum(p.numel() for p in tuned.parameters() if p.requires_grad) < sum(p.numel() for p in tuned.parameters())
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        tuned.train()
        main_output(tuned(**inputs)).float().pow(2).mean().backward()  # any loss moves the adapter
        optimizer.step()
        optimizer.zero_grad()
    trained = outputs(tuned, inputs)
    assert (trained - before).abs().max() > 1e-4, "three steps did not change the outputs"
    tuned.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(built(model_type), tmp_path / "adapter")
    torch.testing.assert_close(outputs(reloaded, inputs), trained, rtol=1e-5, atol=1e-5)
    merged = reloaded.merge_and_unload()
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())  # merged into plain weights
    torch.testing.assert_close(outputs(merged, inputs), trained, rtol=1e-4, atol=1e-4)


# -- pipelines -------------------------------------------------------------------------------------------
PIPELINE_TASKS = {"zoo_upcycled_moe": "text-generation", "xmoe": "text-generation", "moiie": "image-text-to-text",
                  "mote": "image-text-to-text", "moe_llava": "image-text-to-text", "dense_vl": "image-text-to-text",
                  "unimoe": "image-text-to-text", "mova": "image-text-to-text", "mofme": "image-restoration",
                  "mome": "automatic-speech-recognition"}
NO_PIPELINE_YET = {
}
NEW_TOKENS = 4


def _text_system(model_type):
    from tests.tiny_mome import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    decoder = tiny_decoder(vocab_size=len(tokenizer))
    if model_type == "xmoe":
        from zoo.models.xmoe import XMoEConfig, XMoEForCausalLM

        model = XMoEForCausalLM(XMoEConfig(text_config=decoder.config.to_dict()))
    else:
        from zoo.models.upcycled import UpcycledMoeForCausalLM

        model = UpcycledMoeForCausalLM.from_dense(decoder, "top2-of-4")
    prompt = "transcribe the audio"
    return model, tokenizer, (prompt,), tokenizer(prompt, return_tensors="pt")


def _vl_system(model_type):
    import importlib

    from PIL import Image

    from tests.tiny_mome import CHAT_TEMPLATE, tiny_tokenizer
    from tests.tiny_systems import LLAMA, TOWER
    from zoo.multimodal.processing import IMAGENET_MEAN_STD, VisionLanguageProcessor

    names = {"moiie": ("zoo.models.moiie", "MoiieConfig", "MoiieForConditionalGeneration"),
             "mote": ("zoo.models.mote", "MoteConfig", "MoteForConditionalGeneration"),
             "moe_llava": ("zoo.models.moe_llava", "MoeLlavaConfig", "MoeLlavaForConditionalGeneration"),
             "dense_vl": ("zoo.multimodal.modeling", "MultimodalMoeConfig", "MultimodalMoeForConditionalGeneration")}
    module, config_name, model_name = names[model_type]
    module = importlib.import_module(module)
    tokenizer = tiny_tokenizer()
    probe = VisionLanguageProcessor(tokenizer, 32, *IMAGENET_MEAN_STD, num_image_tokens=1)  # adds <image>
    config = getattr(module, config_name)(text_config={**LLAMA, "vocab_size": len(probe.tokenizer)},
                                          vision_tower=TOWER, image_token_id=probe.image_token_id)
    model = getattr(module, model_name)(config, load_tower_weights=False)
    processor = VisionLanguageProcessor(probe.tokenizer, 32, *IMAGENET_MEAN_STD,
                                        num_image_tokens=model.num_image_tokens(), chat_template=CHAT_TEMPLATE)
    image = Image.fromarray(tiny_mova.image(3, side=32))
    text = processor.prompt("what is it")
    return model, processor, {"images": image, "text": text}, processor(images=[image], text=text)


def _unimoe_system(model_type):
    from PIL import Image

    processor = tiny_unimoe.tiny_processor()
    model = tiny_unimoe.tiny_model(processor, seed=1)
    image = Image.fromarray(tiny_unimoe.image(1))
    text = processor.prompt("what is it", media=("image",))
    return model, processor, {"images": image, "text": text}, processor(text=[text], images=[image])


def _mome_system(model_type):
    processor = tiny_mome.tiny_processor()
    model = tiny_mome.tiny_model(processor, seed=1)
    audio = tiny_mome.clip(0.8, seed=5)
    features = processor.audio_features(audio, 16_000)
    return (model, processor, ({"raw": audio, "sampling_rate": 16_000},),
            {"input_features": features["input_features"], "feature_lengths": features["feature_lengths"]})


def _mova_system(model_type):
    from PIL import Image

    model, processor = tiny_mova.tiny_model(seed=1)
    image = Image.fromarray(tiny_mova.image(0))
    inputs = processor(images=[image], questions=["what colour"])
    return model, processor, {"images": image, "text": "what colour"}, {**inputs, "tokenizer": processor.tokenizer}


def _mofme_system(model_type):
    from PIL import Image

    from zoo.models.mofme import MoFMEImageProcessor

    image = Image.fromarray(tiny_mova.image(2, side=32))
    processor = MoFMEImageProcessor()
    return built("mofme"), processor, (image,), processor(image)


PIPELINE_SYSTEMS = {"mova": _mova_system, "mofme": _mofme_system, "zoo_upcycled_moe": _text_system, "xmoe": _text_system, "moiie": _vl_system, "mote": _vl_system,
                    "moe_llava": _vl_system, "dense_vl": _vl_system, "unimoe": _unimoe_system, "mome": _mome_system}


def test_every_model_type_has_a_pipeline_task():
    assert set(PIPELINE_TASKS) == set(SYSTEMS)


@pytest.mark.parametrize("model_type", [
    pytest.param(t, marks=pytest.mark.xfail(reason=NO_PIPELINE_YET[t], strict=True))
    if t in NO_PIPELINE_YET else t for t in sorted(SYSTEMS)])
def test_each_system_answers_through_its_pipeline_task(model_type, tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    model, processor, call, generate_inputs = PIPELINE_SYSTEMS[model_type](model_type)
    model.eval().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    task = PIPELINE_TASKS[model_type]
    answering = pipeline(task, model=str(tmp_path))
    assert type(answering.model) is type(model)
    if task == "image-restoration":
        import numpy as np

        from zoo.models.mofme import restore_image

        restored = answering(*call)
        expected = (restore_image(model, processor, call[0]).image * 255).round().clip(0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(restored["image"]), expected) and restored["dominant_expert"].shape == (4, 4)
        return
    generation = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "num_beams": 1}
    with torch.no_grad():
        greedy = model.generate(**generate_inputs, **generation)
    greedy = getattr(greedy, "sequences", greedy)  # MoVA: the answer pass of its two-pass generate
    tokenizer = getattr(processor, "tokenizer", processor)
    if task == "automatic-speech-recognition":
        assert answering(*call, generate_kwargs=generation) == {"text": tokenizer.decode(greedy[0], skip_special_tokens=True)}
        return
    prompt_length = generate_inputs["input_ids"].shape[1]
    new_text = tokenizer.decode(greedy[0, prompt_length:], skip_special_tokens=True)
    if isinstance(call, dict):
        result = answering(**call, generate_kwargs=generation, return_full_text=False)
    else:
        result = answering(*call, **generation, return_full_text=False)
    assert new_text.strip() and result[0]["generated_text"].strip() == new_text.strip()
