"""One config style (issue 9): every config the zoo registers refuses bad field values with a
ValueError / TypeError that names the class and the field; presets hand out copies; a system's name
is its model_type, and the old spellings still work with a FutureWarning naming the new one.

The config classes are found by walking what `import zoo.models` registered with transformers'
AutoConfig, and their fields by walking the dataclass fields they declare, so a new system and a new
field join these tests without an edit here."""
import dataclasses
import importlib
import json
import math
import pkgutil
import re
import types
import typing
import warnings

import pytest
from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import zoo
import zoo.models
from zoo.auto_registration import MODEL_PACKAGES
from zoo.core.validation import FieldTypeError
from zoo.upcycling.plan import PLANS, UpcyclePlan, get_plan

LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 4,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}
# int fields whose valid range includes 0 / negative numbers (every other int field must be positive)
MAY_BE_ZERO = {"num_head_res_blocks", "seed", "image_token_id", "audio_token_id", "video_token_id", "num_shared_experts"}
MAY_BE_NEGATIVE = {"seed", "image_token_id"}  # a placeholder id outside the vocabulary (-200, LLaVA's)


def registered_config_classes() -> list[type]:
    for model_type in MODEL_PACKAGES:  # the lazy table imports each package on lookup
        CONFIG_MAPPING[model_type]
    found = {c for c in CONFIG_MAPPING._extra_content.values() if c.__module__.startswith("zoo.")}
    # an alias for an old model_type builds the current class (its own test is below), it has no fields of its own
    return sorted((c for c in found if "__new__" not in vars(c)), key=lambda c: c.__name__)


CONFIG_CLASSES = registered_config_classes()


def build(cls, **fields):
    """The config with `fields` on top of the smallest valid arguments."""
    if cls is UpcyclePlan:
        return cls(**fields)
    return cls(**{"text_config": dict(LLAMA)}, **fields) if "text_config" in declared_fields(cls) else cls(**fields)


def declared_fields(cls) -> dict[str, object]:
    """{field: annotation} of the fields the zoo declares (transformers' own PreTrainedConfig fields excluded)."""
    if not issubclass(cls, PreTrainedConfig):  # UpcyclePlan: a plain dataclass, string annotations are fine
        return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
    base = {f.name for f in dataclasses.fields(PreTrainedConfig)}
    return {f.name: f.type for f in dataclasses.fields(cls) if f.name not in base}


def kind_of(annotation) -> str | None:
    """'int' | 'float' | 'bool' | 'str' for a field these tests know bad values of, else None."""
    args = set(typing.get_args(annotation)) - {type(None)} if isinstance(annotation, types.UnionType) else {annotation}
    if args == {bool}:
        return "bool"
    if args == {int}:
        return "int"
    if args in ({float}, {float, int}):
        return "float"
    if args == {str}:
        return "str"
    return None


def bad_values(name: str, kind: str) -> list:
    if kind == "int":
        values = [1.5, True, "2", math.nan]
        values += [] if name in MAY_BE_ZERO else [0]
        values += [] if name in MAY_BE_NEGATIVE else [-1]
        return values
    if kind == "float":
        return [-1, True, "2", math.nan, math.inf, -math.inf]
    if kind == "bool":
        return ["false", "True", 0, 1, None]
    return [123, True]  # str


CASES = [
    pytest.param(cls, name, value, id=f"{cls.__name__}.{name}={value!r}")
    for cls in [*CONFIG_CLASSES, UpcyclePlan]
    for name, annotation in declared_fields(cls).items()
    if (kind := kind_of(annotation)) is not None
    for value in bad_values(name, kind)
]


def test_the_walk_finds_every_system_config():
    names = {c.__name__ for c in CONFIG_CLASSES}
    assert {"MoFMEConfig", "MoiieConfig", "MoteConfig", "MoeLlavaConfig", "MultimodalMoeConfig", "UpcycledMoeConfig",
            "XMoEConfig"} <= names
    assert len(CASES) > 150  # every numeric / flag / name field of every config, several bad values each


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_field_types_are_real_annotations_that_strict_checks(cls):
    """`from __future__ import annotations` in a config module turns them into strings, which @strict skips."""
    strings = {name: a for name, a in declared_fields(cls).items() if isinstance(a, str)}
    assert not strings, f"{cls.__module__}: string annotations {strings}"


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_valid_and_survive_a_save(cls, tmp_path):
    config = build(cls)
    config.save_pretrained(tmp_path)  # runs the validators again
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(config) and loaded.to_dict() == {**config.to_dict(), "_name_or_path": str(tmp_path)}


@pytest.mark.parametrize("cls, name, value", CASES)
def test_a_bad_field_value_is_refused_naming_class_and_field(cls, name, value):
    with pytest.raises((ValueError, TypeError)) as caught:
        build(cls, **{name: value})
    owners = {c.__name__ for c in cls.__mro__}
    named = re.findall(r"\b(\w+)\.(\w+)\b", str(caught.value))
    assert any(owner in owners and field == name for owner, field in named), str(caught.value)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_assigning_a_value_of_the_wrong_type_later_is_refused(cls):
    config = build(cls)
    for name, annotation in declared_fields(cls).items():
        kind = kind_of(annotation)
        if kind in ("int", "bool", "str"):
            with pytest.raises(FieldTypeError, match=re.escape(f"{type(config).__name__}.{name}")):
                setattr(config, name, {"int": "2", "bool": "false", "str": 3}[kind])


def test_a_value_broken_after_construction_is_refused_at_save(tmp_path):
    from zoo.models.mofme import MoFMEConfig

    config = MoFMEConfig()
    config.num_experts = 0  # an int: the type check passes, the value check runs before save_pretrained
    with pytest.raises(ValueError, match=r"MoFMEConfig\.num_experts must be a positive integer, got 0"):
        config.save_pretrained(tmp_path)


def test_errors_read_as_the_house_style():
    from zoo.models.moiie import MoiieConfig

    with pytest.raises(ValueError, match=r"^MoiieConfig\.num_experts must be a positive integer, got 0$"):
        MoiieConfig(text_config=dict(LLAMA), num_experts=0)
    with pytest.raises(ValueError, match=r"^UpcyclePlan\.normalize must be True or False, got 'false'$"):
        UpcyclePlan(normalize="false")
    with pytest.raises(ValueError, match=r"^UpcyclePlan\.router_aux_loss_coef must be a finite number >= 0, got nan$"):
        UpcyclePlan(router_aux_loss_coef=math.nan)


@pytest.mark.parametrize("build_module, field", [
    (lambda: zoo.TopKRouter(8, 4, 2, normalize="false"), "TopKRouter.normalize"),
    (lambda: zoo.TopKRouter(8, 4, 2, jitter=math.nan), "TopKRouter.jitter"),
    (lambda: zoo.TopKRouter(8, 4, True), "TopKRouter.top_k"),
    (lambda: zoo.ThresholdRouter(8, 4, threshold=math.nan), "ThresholdRouter.threshold"),
    (lambda: zoo.ThresholdRouter(8, 4, capacity_factor=math.inf), "ThresholdRouter.capacity_factor"),
    (lambda: zoo.ModalityRouter(8, 2, {"text": [0], "image": [1]}, top_k=1, normalize=1), "ModalityRouter.normalize"),
    (lambda: zoo.GLUExperts(4, "8", 16), "GLUExperts.hidden_size"),
    (lambda: zoo.MLPExperts(4, 8, 16, bias="yes"), "MLPExperts.bias"),
])
def test_routers_and_banks_use_the_same_checks(build_module, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        build_module()


def test_uncertainty_router_refuses_nan_and_bool():
    from zoo.core import UncertaintyAwareRouter

    for kwargs, field in [(dict(dropout=math.nan), "dropout"), (dict(ridge=math.inf), "ridge"),
                          (dict(num_samples=True), "num_samples"), (dict(momentum=0.0), "momentum")]:
        with pytest.raises(ValueError, match=f"UncertaintyAwareRouter.{field}"):
            UncertaintyAwareRouter(8, 4, 2, **kwargs)


# -- presets hand out copies -----------------------------------------------------------------------
def preset_tables():
    tables = {"zoo.PLANS": PLANS}
    for info in pkgutil.iter_modules(zoo.models.__path__):
        try:
            module = importlib.import_module(f"zoo.models.{info.name}.presets")
        except ModuleNotFoundError:
            continue
        tables[f"zoo.models.{info.name}.presets.PRESETS"] = module.PRESETS
    return tables


def snapshot(value):
    if isinstance(value, PreTrainedConfig):
        return json.dumps(value.to_dict(), sort_keys=True, default=str)
    if dataclasses.is_dataclass(value):
        return json.dumps(dataclasses.asdict(value), sort_keys=True, default=str)
    return json.dumps(value, sort_keys=True, default=str)


def mutate(value) -> None:
    """Change something inside the preset as handed out: a field of a config/plan, or a nested dict."""
    if isinstance(value, PreTrainedConfig):
        value.num_experts = value.num_experts + 1
    elif dataclasses.is_dataclass(value):
        value.num_experts += 1
        if isinstance(value.expert_options, dict):
            value.expert_options["poked"] = 1
    else:
        for part in value if isinstance(value, tuple) else (value,):
            if isinstance(part, dict):
                part["poked"] = 1
                for inner in part.values():
                    if isinstance(inner, dict):
                        inner["poked"] = 1


@pytest.mark.parametrize("table", list(preset_tables()))
def test_mutating_a_preset_you_got_does_not_change_the_next_lookup(table):
    presets = preset_tables()[table]
    assert presets, table
    for name in presets:
        before = snapshot(presets[name])
        got = presets[name]
        mutate(got)
        assert snapshot(got) != before, f"{table}[{name!r}]: the mutation did nothing"
        assert snapshot(presets[name]) == before, f"{table}[{name!r}] handed out the shared object"
    with pytest.raises(TypeError):
        presets["new"] = next(iter(presets.values()))


def test_get_plan_and_register_plan_copy_too():
    plan = get_plan("top2-of-4")
    plan.num_experts = 99
    assert get_plan("top2-of-4").num_experts == 4
    mine = UpcyclePlan(num_experts=3, num_experts_per_tok=1)
    zoo.upcycling.register_plan("test-top1-of-3", mine)
    try:
        mine.num_experts = 5
        assert PLANS["test-top1-of-3"].num_experts == 3
    finally:
        PLANS._presets.pop("test-top1-of-3")


def test_preset_lookup_of_an_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown upcycling plan 'top3'.*top2-of-4"):
        PLANS["top3"]
    with pytest.raises(ValueError, match="unknown upcycling plan 'top3'.*top2-of-4"):
        get_plan("top3")


# -- one spelling per system -----------------------------------------------------------------------
def test_every_vision_language_system_is_named_as_its_model_type():
    from zoo.pipelines import vl_easyvqa
    from zoo.pipelines.train import RECIPE_MODULES

    systems = vl_easyvqa.systems()
    for name, (config_class, _, _) in systems.items():
        assert config_class.model_type == name
        assert name in MODEL_PACKAGES and name in RECIPE_MODULES
    assert {"moe_llava", "dense_vl"} <= set(systems)


@pytest.mark.parametrize("old, new", [("moe-llava", "moe_llava"), ("dense-vl", "dense_vl")])
def test_old_system_spellings_still_work_with_a_future_warning(old, new):
    from zoo.pipelines import vl_easyvqa
    from zoo.pipelines.train import get_evaluation, get_recipe

    with pytest.warns(FutureWarning, match=f"'{old}' is deprecated.*use '{new}'"):
        recipe = get_recipe(old, "tiny")
    assert recipe is get_recipe(new, "tiny")
    with pytest.warns(FutureWarning, match=f"use '{new}'"):
        assert get_evaluation(old) is get_evaluation(new)
    with pytest.warns(FutureWarning, match=f"use '{new}'"):
        assert vl_easyvqa.shipped_path(old) == vl_easyvqa.shipped_path(new)
    assert vl_easyvqa.shipped_path(new).is_file()  # the shipped trained parts are found under the new name


def test_the_moe_llava_plan_is_spelled_like_its_system():
    assert "moe_llava" in PLANS and "moe-llava" not in sorted(PLANS)
    with pytest.warns(FutureWarning, match="upcycling plan 'moe-llava' is deprecated.*use 'moe_llava'"):
        old = PLANS["moe-llava"]
    assert old == PLANS["moe_llava"]


def test_a_saved_config_with_the_old_model_type_loads_with_a_future_warning(tmp_path):
    from zoo.multimodal.modeling import MultimodalMoeConfig

    assert MultimodalMoeConfig.model_type == "dense_vl" and "vl_dense" in MODEL_PACKAGES
    MultimodalMoeConfig(text_config=dict(LLAMA), image_token_id=5, moe_layers=[1]).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "dense_vl"
    (tmp_path / "config.json").write_text(json.dumps({**saved, "model_type": "vl_dense"}))  # an older checkpoint
    with pytest.warns(FutureWarning, match="model_type 'vl_dense' is deprecated.*use 'dense_vl'"):
        loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is MultimodalMoeConfig and loaded.model_type == "dense_vl"
    assert loaded.moe_layers == [1] and loaded.image_token_id == 5
    loaded.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "dense_vl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current spelling loads without a warning
        AutoConfig.from_pretrained(tmp_path)
