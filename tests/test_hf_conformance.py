"""Every model type the zoo registers is a Hugging Face citizen (issue 13), checked over one table of tiny
systems (tests/tiny_systems.py): a registered type without a row fails here, so a new system joins these
checks when it lands.

- whole-model round trip: `save_pretrained` writes config + safetensors (+ generation config for the
  generative ones), and a fresh process that only imports zoo loads the folder with `AutoModel` and with
  the task's Auto class, giving the same class and the same outputs (to float rounding: the same weights and
  buffers, but a timm tower's convolutions may take another oneDNN kernel in a loaded model; measured 3e-8 for
  MoIIE, 1.5e-6 for MoVA, the first differing module a pointwise conv whose inputs and weights are equal).
- PEFT: `peft.get_peft_model(model, zoo.lora.lora_config(model, "attention+experts"))` trains a few steps,
  the adapter saved and loaded on a fresh base gives the trained outputs, and so does the merged model."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    inputs = torch.load(folder / "inputs.pt")
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
        torch.testing.assert_close(torch.load(folder / f"output-{auto}.pt"), output, rtol=1e-5, atol=1e-5)


NO_LORA_TARGETS_YET = {"mofme": "MoFME has no lora_targets yet (its restoration transformer: qkv/proj + FiLM experts)"}


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
