"""A checkpoint whose router/expert tensors are missing, renamed, extra or mis-shaped is refused by
from_pretrained with a ValueError naming the keys and the file, for every zoo model type, and `zoo export`
of such a folder exits 2 with that message instead of writing the garbage into a Hub folder.

Before: the expert banks and routers skip transformers' init (upcycling initialises them), so a folder
without them loaded uninitialised memory (NaN, 1e37; different on every load) with only transformers'
load report to say so, and `zoo export` exited 0."""
from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import zoo  # noqa: F401  (registers the zoo's model types)
from zoo.apps.cli import main as zoo_cli
from tests import tiny_mome, tiny_unimoe
from tests.tiny_systems import IMAGE_ID, LLAMA, MOFME, TOWER
from tests.tiny_decoders import tiny_decoder, token_ids
from zoo.auto_registration import MODEL_PACKAGES
from zoo.core.routing import Router
from zoo.integrations.checkpoint_keys import StrictMoeLoading
from zoo.integrations.hub import export
from zoo.models.mofme import MoFMEConfig, MoFMEForImageRestoration
from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration
from zoo.models.mome import MomeForSpeechRecognition
from zoo.models.mote import MoteConfig, MoteForConditionalGeneration
from zoo.models.unimoe import UniMoeForConditionalGeneration
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.models.xmoe import XMoEConfig, XMoEForCausalLM
from zoo.multimodal.modeling import MultimodalMoeConfig, MultimodalMoeForConditionalGeneration

pytestmark = pytest.mark.usefixtures("single_thread")

VL = dict(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID)
SYSTEMS = {
    "upcycled": lambda: UpcycledMoeForCausalLM.from_dense(tiny_decoder(), "top2-of-4"),
    "xmoe": lambda: XMoEForCausalLM(XMoEConfig(text_config=tiny_decoder().config.to_dict())),
    "moiie": lambda: MoiieForConditionalGeneration(MoiieConfig(**VL), load_tower_weights=False),
    "moe_llava": lambda: MoeLlavaForConditionalGeneration(MoeLlavaConfig(**VL), load_tower_weights=False),
    "mote": lambda: MoteForConditionalGeneration(MoteConfig(**VL), load_tower_weights=False),
    "dense_vl": lambda: MultimodalMoeForConditionalGeneration(MultimodalMoeConfig(**VL), load_tower_weights=False),
    "mofme_fme": lambda: MoFMEForImageRestoration(MoFMEConfig(**MOFME)),
    "mofme_ffn": lambda: MoFMEForImageRestoration(MoFMEConfig(**MOFME, moe_type="ffn", router_type="top_k")),
    "mome": lambda: MomeForSpeechRecognition(tiny_mome.tiny_config(tiny_mome.tiny_processor())),
    "unimoe": lambda: UniMoeForConditionalGeneration(tiny_unimoe.tiny_config(tiny_unimoe.tiny_processor())),
}
EXPERT_KEY = re.compile(r"(^|\.)\w*experts\.")


def saved(system: str, folder):
    torch.manual_seed(0)
    model = SYSTEMS[system]().eval()
    model.save_pretrained(folder)
    return model


def rewrite_weights(folder, change) -> dict[str, torch.Tensor]:
    """Apply `change` to the folder's state dict in place; returns the original."""
    path = folder / "model.safetensors"
    original = load_file(str(path))
    save_file(change(dict(original)), str(path), metadata={"format": "pt"})
    return original


def expert_keys(state) -> list[str]:
    keys = sorted(k for k in state if EXPERT_KEY.search(k))
    assert keys, "no expert tensors found: the test's key pattern is out of date"
    return keys


def first_router(model) -> str:
    return next(name for name, module in model.named_modules() if isinstance(module, Router))


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_checkpoint_without_its_experts_is_refused_naming_the_keys_and_file(system, tmp_path):
    model = saved(system, tmp_path)
    state = rewrite_weights(tmp_path, lambda s: {k: v for k, v in s.items() if not EXPERT_KEY.search(k)})
    with pytest.raises(ValueError, match=re.escape(expert_keys(state)[0])) as refused:
        type(model).from_pretrained(tmp_path)
    assert f"{tmp_path}: " in str(refused.value) and "missing from model.safetensors" in str(refused.value)


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_renamed_expert_tensor_is_refused_naming_both_names(system, tmp_path):
    model = saved(system, tmp_path)
    renamed = {}

    def rename_one(state):
        key = expert_keys(state)[-1]
        renamed[key] = key.replace("experts.", "experts_old.")
        state[renamed[key]] = state.pop(key)
        return state

    rewrite_weights(tmp_path, rename_one)
    (old, new), = renamed.items()
    with pytest.raises(ValueError) as refused:
        type(model).from_pretrained(tmp_path)
    message = str(refused.value)
    assert f"missing from model.safetensors: {old}" in message and f"unexpected in model.safetensors: {new}" in message


@pytest.mark.parametrize("system", SYSTEMS)
def test_an_unexpected_router_tensor_is_refused(system, tmp_path):
    model = saved(system, tmp_path)
    extra = f"{first_router(model)}.bias"
    assert extra not in model.state_dict()
    rewrite_weights(tmp_path, lambda s: {**s, extra: torch.zeros(4)})
    with pytest.raises(ValueError, match=re.escape(f"unexpected in model.safetensors: {extra}")):
        type(model).from_pretrained(tmp_path)


def test_router_keys_for_layers_without_moe_are_refused_by_their_names(tmp_path):
    """Layer 0 of this MoIIE is dense: a router key there has no module to belong to, its name says what it is."""
    model = saved("moiie", tmp_path)
    assert 0 not in model.moe_layer_ids
    extra = {"language_model.model.layers.0.mlp.router.weight": torch.zeros(4, 32),
             "language_model.model.layers.0.mlp.experts.0.down_proj.weight": torch.zeros(32, 48)}
    rewrite_weights(tmp_path, lambda s: {**s, **extra})
    with pytest.raises(ValueError) as refused:
        type(model).from_pretrained(tmp_path)
    assert all(key in str(refused.value) for key in extra)


def test_reinitialising_mis_shaped_experts_is_refused_even_when_asked(tmp_path):
    """ignore_mismatched_sizes=True asks transformers to re-initialise mis-shaped weights; experts would get
    uninitialised memory, so the shapes are named instead."""
    model = saved("upcycled", tmp_path)
    key = expert_keys(model.state_dict())[0]
    rewrite_weights(tmp_path, lambda s: {**s, key: s[key][:, :-1].contiguous()})
    with pytest.raises(ValueError, match=re.escape(f"shapes differ: {key}")):
        AutoModelForCausalLM.from_pretrained(tmp_path, ignore_mismatched_sizes=True)


def test_a_sharded_checkpoint_names_the_shard_of_an_unexpected_tensor(tmp_path):
    model = SYSTEMS["upcycled"]()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    contents = json.loads(index.read_text())
    shard = contents["weight_map"][expert_keys(contents["weight_map"])[0]]
    extra = f"{first_router(model)}.bias"
    save_file({**load_file(str(tmp_path / shard)), extra: torch.zeros(4)}, str(tmp_path / shard), metadata={"format": "pt"})
    contents["weight_map"][extra] = shard
    index.write_text(json.dumps(contents))
    with pytest.raises(ValueError, match=re.escape(f"unexpected in {shard}: {extra}")):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_a_complete_checkpoint_loads_exactly_and_still_reports_when_asked(tmp_path):
    model = saved("upcycled", tmp_path)
    ids = token_ids()
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is UpcycledMoeForCausalLM and not any(info.values())
    torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_every_model_class_the_zoo_registers_loads_strictly():
    for model_type in MODEL_PACKAGES:  # the lazy table imports each package on lookup
        CONFIG_MAPPING[model_type]
    registered = {}
    for mapping in vars(modeling_auto).values():
        if isinstance(mapping, modeling_auto._LazyAutoMapping):
            for config_class, model_class in mapping._extra_content.items():
                if config_class.model_type in MODEL_PACKAGES:
                    registered.setdefault(config_class.model_type, set()).add(model_class)
    # "vl_dense" is the dense baseline's old spelling: a config only, its checkpoints load as dense_vl
    assert set(MODEL_PACKAGES) - set(registered) == {"vl_dense"}
    for model_type, classes in registered.items():
        for model_class in classes:
            assert issubclass(model_class, StrictMoeLoading), (model_type, model_class)


# -- zoo export --------------------------------------------------------------------------------------
def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()  # only what the command itself prints
    code = zoo_cli(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["delete experts", "rename one"])
def test_zoo_export_of_a_damaged_checkpoint_exits_2_naming_the_key(damage, tmp_path, capsys):
    source = tmp_path / "moe"
    saved("upcycled", source)

    def damaged(state):
        keys = expert_keys(state)
        if damage == "rename one":
            state[keys[0] + "_renamed"] = state.pop(keys[0])
            return state
        return {k: v for k, v in state.items() if k not in keys}

    state = rewrite_weights(source, damaged)
    code, err = run_cli(["export", str(source), "--out", str(tmp_path / "hub")], capsys)
    assert code == 2
    message = err.strip().splitlines()[-1]  # after transformers' progress bars and load report
    assert message.startswith("zoo export: ") and expert_keys(state)[0] in message and "Traceback" not in err
    assert not (tmp_path / "hub").exists()  # refused before anything was written


def test_zoo_export_of_a_complete_checkpoint_still_exits_0(tmp_path, capsys):
    saved("upcycled", tmp_path / "moe")
    code, err = run_cli(["export", str(tmp_path / "moe"), "--out", str(tmp_path / "hub")], capsys)
    assert code == 0, err
    assert (tmp_path / "hub" / "model.safetensors").is_file()


def test_hub_export_refuses_non_finite_weights(tmp_path):
    model = SYSTEMS["upcycled"]()
    bank = model.moe_layers()[0][1].moe.experts
    with torch.no_grad():
        next(bank.parameters())[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite .* model\.model\.layers\.0\.mlp\.moe\.experts\."):
        export(model, tmp_path / "hub")
    assert not (tmp_path / "hub").exists()
