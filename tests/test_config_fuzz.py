"""Property-based fuzzing of every config, plan, router and expert spec the zoo defines (issue 14).

For each field of each class, hypothesis draws values that are wrong for that field (a string for a
flag, NaN / inf / 1e300 / negative numbers, a bool for a count, a list of the wrong things, ...) and
the class must refuse it at construction with a ValueError or TypeError whose message names the field:
never accept it silently (to compute NaN losses or fail at the first forward), never crash with an
unrelated exception. The tables below say what a wrong value is for each field; a test checks that they
cover every field the classes declare, so a new field cannot go unfuzzed.

Deterministic (derandomize=True, no example database) and bounded (EXAMPLES per field), for CI.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from tests.test_config_style import CONFIG_CLASSES, LLAMA, declared_fields
from zoo.core import GROUPED_LINEAR_BACKENDS, ModalityRouter, MoEBlock, ThresholdRouter, TopKRouter, UncertaintyAwareRouter
from zoo.core.expert_banks import GatedMLP, GLUExperts, MLPExperts, SharedExperts
from zoo.core.validation import LARGEST_NUMBER
from zoo.models.moe_llava.modeling_moe_llava import MoeLlavaTopKRouter
from zoo.experts import (BottleneckExperts, FeatureModulatedExperts, FFNWeights, FiLMExperts, LoRAExperts,
                         TernaryGLUExperts)
from zoo.upcycling.plan import UpcyclePlan

EXAMPLES = 12
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- bad values by kind ------------------------------------------------------------------------------
JUNK = st.sampled_from([[1], {"a": 1}, (1,), b"1", 1j])  # of no field's type
STRINGS = st.text(max_size=6)


def bad_flags():
    """Anything but True / False: "false" would read as True, 0 / None as False."""
    return st.one_of(st.sampled_from(["false", "true", "False", "0", "", 0, 1, 0.0, 1.0, None]), st.integers(), JUNK)


def bad_ints(low: int = 1, high: int | None = None, none: bool = False):
    """Not an int in [low, high]: smaller / larger ints, bools (True is not a count), floats (2.0
    included: a count is an int), strings, None (unless allowed)."""
    options = [st.integers(max_value=low - 1), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
               STRINGS, JUNK]
    if high is not None:
        options.append(st.integers(min_value=high + 1))
    if not none:
        options.append(st.none())
    return st.one_of(options)


def bad_numbers(low=None, high=None, low_open=False, high_open=False, none=False):
    """Not a finite number in the interval: NaN, +-inf, +-1e300, anything outside the interval (or
    beyond LARGEST_NUMBER where the interval is open-ended), bools, strings, None (unless allowed)."""
    high = LARGEST_NUMBER if high is None else high
    options = [st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]),
               st.floats(min_value=high, exclude_min=not high_open, allow_infinity=False),
               st.booleans(), STRINGS.filter(lambda s: True), JUNK]
    if low is not None:
        options.append(st.floats(max_value=low, exclude_max=not low_open, allow_infinity=False))
        options.append(st.integers(max_value=math.floor(low) - (0 if low_open or low != math.floor(low) else 1)))
    if not none:
        options.append(st.none())
    return st.one_of(options)


def bad_choices(valid, none: bool = False):
    """Not one of `valid`: other strings, ints, bools, None (unless allowed), junk."""
    valid = tuple(valid)
    options = [STRINGS.filter(lambda s: s not in valid), st.integers(), st.booleans(), JUNK]
    if not none:
        options.append(st.none())
    return st.one_of(options)


def bad_index_lists(size: int | None = None, allow_empty: bool = True):
    """Not a list of indices in [0, size): negative / too large / bool / float / str entries, a bare
    int or string (a string is iterable: "12" must not read as experts "1", "2")."""
    entry = st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), STRINGS)
    if size is not None:
        entry = st.one_of(entry, st.integers(min_value=size))
    options = [st.lists(entry, min_size=1, max_size=3).map(lambda bad: [0, *bad]), st.integers(),
               STRINGS.filter(bool), st.just({"a": 1})]
    if not allow_empty:
        options.append(st.just([]))
    return st.one_of(options)


def bad_tower_specs(kind: str):
    return st.one_of(st.sampled_from([kind, "", 5, [], {}, {"kind": "nope"}, {"kind": 3}, {"name": "x"}]), JUNK)


def bad_sub_configs():
    # a dict without model_type is the default architecture's fields, so {"a": 1} is not wrong here
    return st.sampled_from([5, "llama", [], [1], 1j, {"model_type": "no_such_architecture"}, {"model_type": 3}])


BACKENDS = ("auto", *GROUPED_LINEAR_BACKENDS)
ACTIVATIONS = ("silu", "gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "tanh", "sigmoid", "swish", "quick_gelu")


def bad_activations():
    from transformers.activations import ACT2FN

    return bad_choices(list(ACT2FN)) | st.sampled_from(ACTIVATIONS).map(str.upper)


def bad_tensors(valid_shape: tuple[int, ...]):
    """Not a float tensor of `valid_shape`: other shapes, ranks, integer / bool tensors, lists, None."""
    wrong_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple).filter(lambda s: s != valid_shape)
    return st.one_of(wrong_shapes.map(torch.randn), st.just(torch.ones(valid_shape, dtype=torch.long)),
                     st.just(torch.ones(valid_shape, dtype=torch.bool)), st.just(torch.full(valid_shape, math.nan)),
                     st.sampled_from([None, 3, [[1.0]], "w"]))


def bad_modules():
    return st.sampled_from([None, "router", 3, [], torch.zeros(2), {"hidden_size": 8}])


# -- the fields of each class ------------------------------------------------------------------------
VL_FIELDS = {
    "text_config": bad_sub_configs(),
    "vision_tower": bad_tower_specs("timm"),
    "projector_type": bad_choices(("mlp2x_gelu", "linear")),
    "image_token_budget": bad_ints(none=True),
    "image_token_id": st.one_of(st.booleans(), st.floats(), STRINGS, JUNK),  # any int: LLaVA's -200 is outside the vocabulary
    "moe_layers": st.one_of(bad_index_lists(LLAMA["num_hidden_layers"]), STRINGS.filter(lambda s: s not in ("all", "odd", "even", "none"))),
    "num_experts": bad_ints(),
    "num_experts_per_tok": bad_ints(),
    "expert_lora_rank": bad_ints(none=True),
    "router_aux_loss_coef": bad_numbers(low=0),
}
UPCYCLED_FIELDS = {
    "text_config": bad_sub_configs() | st.just({"model_type": "bert"}),
    "plan": st.one_of(st.sampled_from([5, "top2-of-4", [], {"num_experts": 0}, {"no_such_field": 1},
                                       {"normalize": "false"}, {"router_aux_loss_coef": math.nan}]), JUNK),
    "router_aux_loss_coef": bad_numbers(low=0, none=True),
    "router_z_loss_coef": bad_numbers(low=0, none=True),
    "output_router_logits": bad_flags(),
    "tie_word_embeddings": bad_flags(),
}
RATES = st.one_of(bad_index_lists(), st.just([]), st.just([4, 4]), st.just([0]))

CONFIG_FIELDS = {
    "MultimodalMoeConfig": VL_FIELDS,
    "MoteConfig": {**VL_FIELDS, "ternary_packed": bad_flags(), "ternary_kernel": bad_choices(["int8", "unpack"])},
    "MoeLlavaConfig": {**VL_FIELDS, "capacity_factor": bad_numbers(low=0, low_open=True, none=True),
                       "eval_capacity_factor": bad_numbers(low=0, low_open=True, none=True),
                       "min_capacity": bad_ints()},
    "MoiieConfig": {**VL_FIELDS,
                    "num_experts": bad_ints() | st.sampled_from([2, 3, 5]),  # the default split needs an even E >= 4
                    "expert_groups": st.one_of(st.sampled_from([
                        "image", 5, [], {"image": [0]}, {"image": [0], "shared": [1, 2], "text": [3], "audio": [0]},
                        {"image": [0, 1], "shared": [1, 2], "text": [3]}, {"image": [0], "shared": [1], "text": [3]},
                        {"image": [0], "shared": [1, 2], "text": [9]}, {"image": [True], "shared": [1, 2], "text": [3]},
                        {"image": "0", "shared": [1, 2], "text": [3]}, {"image": [0.0], "shared": [1, 2], "text": [3]},
                    ]), JUNK),
                    "vis_router_aux_loss_coef": bad_numbers(low=0),
                    "lan_router_aux_loss_coef": bad_numbers(low=0),
                    "router_jitter_noise": bad_numbers(low=0, high=1, high_open=True)},
    "UniMoeConfig": {**VL_FIELDS,
                     "expert_lora_alpha": bad_numbers(low=0, low_open=True),
                     "expert_sources": st.one_of(st.sampled_from(["mlp_base", 5, [1, 2, 3, 4], ["", "a", "b", "c"],
                                                                  ["a", "b"]]), JUNK),
                     "router_gumbel_second": bad_flags(),
                     "capacity_factor": bad_numbers(low=0, low_open=True, none=True),
                     "modality_l1_loss_coef": bad_numbers(low=0),
                     "modality_kl_loss_coef": bad_numbers(low=0),
                     **{f"{m}_expert_indices": bad_index_lists(4, allow_empty=False) for m in ("image", "audio", "video")},
                     "video_token_id": bad_ints(low=0, none=True),
                     "max_video_frames": bad_ints(),
                     "audio_tower": bad_tower_specs("whisper"),
                     "audio_token_id": bad_ints(low=0, none=True),
                     "num_audio_query_tokens": bad_ints()},
    "MomeConfig": {
        "text_config": bad_sub_configs() | st.just({"model_type": "bert"}),
        "audio_tower": bad_tower_specs("whisper"),
        "audio_token_id": bad_ints(low=0, none=True),
        "audio_compression_rates": RATES,
        "inference_compression_rate": bad_ints(none=True) | st.sampled_from([3, 5, 7]),  # not one of the rates
        "compression": bad_choices(("avg", "stack")),
        "projector_hidden_size": bad_ints(none=True),
        "video_feature_size": bad_ints(none=True),
        # without a video stream (video_feature_size None) any video setting is refused
        "video_token_id": st.integers(min_value=0) | bad_ints(low=0, none=True),
        "video_compression_rates": RATES | st.just([2, 5]),
        "inference_video_compression_rate": st.integers(min_value=1) | bad_ints(none=True),
        "video_frames_per_second": bad_ints(),
        "mome_placement": bad_choices(("attention", "ffn", "layer")),
        "mome_layers": st.one_of(bad_index_lists(LLAMA["num_hidden_layers"]), st.just([]),
                                 STRINGS.filter(lambda s: s not in ("all", "odd", "even", "none"))),
        "num_routed_experts": bad_ints(),
        "num_shared_experts": bad_ints(low=0),
        "num_experts_per_tok": bad_ints(high=23),
        "bottleneck_size": bad_ints(),
        "normalize_router_weights": bad_flags(),
        "router_aux_loss_coef": bad_numbers(low=0),
        "dispatch_backend": bad_choices(BACKENDS),
        "transcription_prompt_ids": st.one_of(bad_index_lists(), st.just([1, 2, 3])),  # no audio_token_id set
        "tie_word_embeddings": bad_flags(),
    },
    "MoFMEConfig": {
        **{name: bad_ints() for name in ("num_channels", "head_channels", "patch_size", "hidden_size", "num_hidden_layers",
                                         "num_attention_heads", "num_experts", "adaptor_ratio", "ffn_ratio",
                                         "decoder_channels", "decoder_hidden_channels")},
        "num_experts_per_tok": bad_ints(high=16),
        "uar_num_samples": bad_ints(low=2),
        "num_head_res_blocks": bad_ints(low=0),
        "hidden_dropout": bad_numbers(low=0, high=1, high_open=True),
        "uar_dropout": bad_numbers(low=0, high=1, low_open=True, high_open=True),
        "uar_ridge": bad_numbers(low=0),
        "uar_momentum": bad_numbers(low=0, high=1, low_open=True),
        "router_aux_loss_coef": bad_numbers(low=0),
        "moe_type": bad_choices(("fme", "ffn")),
        "router_type": bad_choices(("uncertainty", "top_k")),
        "residual": bad_flags(),
        "unembedding": bad_choices(("pixel_shuffle", "bilinear")),
        "decoder_skip": bad_flags(),
        "dispatch_backend": bad_choices(BACKENDS),
        "output_router_logits": bad_flags(),
    },
    "MovaConfig": {
        "text_config": bad_sub_configs(),
        "vision_tower": bad_tower_specs("timm"),
        "vision_experts": st.one_of(st.sampled_from([
            [], "expert", {"name": "a"}, [{"name": "a"}], [{"name": "", "description": "d", "tower": {"kind": "timm"}}],
            [{"name": "a", "description": "d", "tower": {"kind": "nope"}}],
            [{"name": "a", "description": "d", "tower": {"kind": "timm"}, "extra": 1}],
            [{"name": "a", "description": "d", "tower": {"kind": "timm"}}] * 2,  # duplicate names
            [{"name": f"e{i}", "description": "d", "tower": {"kind": "timm"}} for i in range(27)]]), JUNK),
        **{name: bad_ints() for name in ("num_adapter_blocks", "adapter_num_heads", "downsample_depth",
                                         "routing_max_new_tokens")},
        # more than the paper pool's 7 experts, or not a square grid of pooled tokens
        "top_k_experts": bad_ints(high=7),
        "max_routed_experts": bad_ints(high=7),
        "image_token_budget": bad_ints() | st.sampled_from([575, 577, 1000]),
        "num_routing_tokens": bad_ints() | st.sampled_from([143, 145, 676]),
        **{name: bad_ints(none=True) for name in ("adapter_intermediate_size", "gate_hidden_size", "text_embed_size",
                                                  "routing_lora_rank", "answer_lora_rank")},
        "question_encoder": st.one_of(st.sampled_from([
            "bert", 5, [], {}, {"config": {}, "weights": "all-minilm-l6-v2"}, {"weights": "other"},
            {"weights": "all-minilm-l6-v2", "pooling": "max-ish"}, {"weights": "all-minilm-l6-v2", "extra": 1}]), JUNK),
        "projector_type": bad_choices(("mlp2x_gelu", "linear")),
        "image_token_id": st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), STRINGS, JUNK),
        "coarse_routing": bad_flags(),
        **{f"{kind}_lora_alpha": bad_numbers(low=0, low_open=True) for kind in ("routing", "answer")},
        **{f"{kind}_lora_targets": st.one_of(st.sampled_from([[], "q_proj", [""], [1], ["q_proj", None]]), JUNK)
           for kind in ("routing", "answer")},
    },
    "UpcycledMoeConfig": UPCYCLED_FIELDS,
    "XMoEConfig": {**UPCYCLED_FIELDS, "plan": UPCYCLED_FIELDS["plan"] | st.just({"router": "top_k"})},
}

PLAN_FIELDS = {
    "num_experts": bad_ints(),
    "num_experts_per_tok": bad_ints(high=4),
    "router": bad_choices(("top_k", "threshold", "modality")),
    "normalize": bad_flags(),
    "jitter": bad_numbers(low=0, high=1, high_open=True),
    "gumbel_second": bad_flags(),
    "threshold": bad_numbers(low=0, high=1, low_open=True),
    "max_k": bad_ints(high=4, none=True),
    "capacity_factor": bad_numbers(low=0, low_open=True, none=True),
    "min_capacity": bad_ints(),
    "modality_experts": st.one_of(st.sampled_from([{"text": [0]}, "text"]), JUNK),  # router 'top_k': not its option
    "shared_experts": st.one_of(bad_index_lists(), st.just([0])),  # router 'top_k': not its option
    "router_init": bad_choices(("normal", "zeros")),
    "router_init_std": bad_numbers(low=0),
    "layers": st.one_of(bad_index_lists().filter(lambda v: not isinstance(v, int)),  # n > 0 = every n-th layer
                        st.just([]), st.integers(max_value=0), st.booleans(), st.floats(),
                        STRINGS.filter(lambda s: s not in ("all", "even", "odd")), st.none()),
    "experts": bad_choices(("copy", "split")),
    "expert_kind": bad_choices(tuple(zoo.experts.EXPERT_KINDS), none=True),
    "expert_options": st.one_of(st.sampled_from(["rank=8", 8, [("rank", 8)], None]), st.just(("rank", 8))),
    "expert_scale": bad_numbers(low=0, low_open=True, none=True),
    "init_noise": bad_numbers(low=0),
    "shared_ffn": bad_choices((None, "dense"), none=True),
    "shared_ffn_gate": bad_flags(),
    "router_aux_loss_coef": bad_numbers(low=0),
    "router_z_loss_coef": bad_numbers(low=0),
    "dispatch_backend": bad_choices(BACKENDS),
    "seed": st.one_of(st.booleans(), st.floats(), STRINGS, JUNK),
}

# routers and expert banks: the smallest valid arguments, and the wrong values of each parameter
ROUTER_FIELDS = {
    "hidden_size": bad_ints(),
    "num_experts": bad_ints(),
    "jitter": bad_numbers(low=0, high=1, high_open=True),
    "capacity_factor": bad_numbers(low=0, low_open=True, none=True),
    "min_capacity": bad_ints(),
}
TOP_K_FIELDS = {**ROUTER_FIELDS, "top_k": bad_ints(high=4), "normalize": bad_flags()}
BANK_FIELDS = {"num_experts": bad_ints(), "hidden_size": bad_ints(), "intermediate_size": bad_ints(),
               "act": bad_activations()}
MODULE_CASES = {
    TopKRouter: (dict(hidden_size=8, num_experts=4, top_k=2), {**TOP_K_FIELDS, "gumbel_second": bad_flags()}),
    ThresholdRouter: (dict(hidden_size=8, num_experts=4), {**ROUTER_FIELDS, "threshold": bad_numbers(low=0, high=1, low_open=True),
                                                            "max_k": bad_ints(high=4, none=True)}),
    ModalityRouter: (dict(hidden_size=8, num_experts=4, modality_experts={"text": [0], "image": [1]}, shared_experts=[2, 3]), {
        **TOP_K_FIELDS,
        "top_k": bad_ints(high=3),  # a modality reaches 3 experts
        "modality_experts": st.one_of(st.sampled_from([
            {}, "text", {"text": "0", "image": [1]}, {"text": [0.5], "image": [1]}, {"text": [True], "image": [0]},
            {"text": [-1], "image": [1]}, {"text": [9], "image": [1]}, {5: [0], "image": [1]}, {"smell": [0], "image": [1]},
            {"text": 0, "image": [1]}, {"text": [], "image": [1]}, {"text": [0], "image": [0]}]), JUNK),
        "shared_experts": st.one_of(bad_index_lists(4), st.sampled_from(["23", [True, 3], [2.0, 3]])),
    }),
    UncertaintyAwareRouter: (dict(hidden_size=8, num_experts=4, top_k=2), {
        **{k: v for k, v in TOP_K_FIELDS.items() if k != "normalize"},
        "num_samples": bad_ints(low=2),
        "dropout": bad_numbers(low=0, high=1, low_open=True, high_open=True),
        "ridge": bad_numbers(low=0),
        "momentum": bad_numbers(low=0, high=1, low_open=True),
        "eval_seed": bad_ints(low=0),
    }),
    MoeLlavaTopKRouter: (dict(hidden_size=8, num_experts=4, top_k=2, capacity_factor=1.5, eval_capacity_factor=2.0,
                              min_capacity=4), {**{k: v for k, v in TOP_K_FIELDS.items() if k in ("hidden_size", "num_experts", "top_k", "min_capacity")},
                                                "capacity_factor": ROUTER_FIELDS["capacity_factor"],
                                                "eval_capacity_factor": ROUTER_FIELDS["capacity_factor"]}),
    GLUExperts: (dict(num_experts=4, hidden_size=8, intermediate_size=16), BANK_FIELDS),
    MLPExperts: (dict(num_experts=4, hidden_size=8, intermediate_size=16), {**BANK_FIELDS, "bias": bad_flags()}),
    GatedMLP: (dict(hidden_size=8, intermediate_size=16), {k: BANK_FIELDS[k] for k in ("hidden_size", "intermediate_size", "act")}),
    SharedExperts: (dict(hidden_size=8, intermediate_size=16), {
        "hidden_size": bad_ints(), "intermediate_size": bad_ints(), "act": bad_activations(), "gated": bad_flags(),
        "ffn": bad_modules().filter(lambda m: m is not None)}),
    BottleneckExperts: (dict(num_experts=4, hidden_size=8, bottleneck_size=2), {
        "num_experts": bad_ints(), "hidden_size": bad_ints(), "bottleneck_size": bad_ints(), "act": bad_activations()}),
    FiLMExperts: (dict(num_experts=4, hidden_size=8), {"num_experts": bad_ints(), "hidden_size": bad_ints()}),
    FeatureModulatedExperts: (dict(router=lambda: TopKRouter(8, 4, 2), hidden_size=8), {
        "router": bad_modules(), "hidden_size": bad_ints(), "adaptor_ratio": bad_ints(),
        "dropout": bad_numbers(low=0, high=1, high_open=True), "dispatch_backend": bad_choices(BACKENDS)}),
    LoRAExperts: (dict(num_experts=4, hidden_size=8, intermediate_size=16), {
        **BANK_FIELDS, "rank": bad_ints(), "alpha": bad_numbers(low=0, low_open=True), "per_expert_base": bad_flags()}),
    TernaryGLUExperts: (dict(num_experts=4, gate_up=lambda: torch.randn(32, 8), down=lambda: torch.randn(8, 16)), {
        "num_experts": bad_ints(), "gate_up": bad_tensors((32, 8)), "down": bad_tensors((8, 16)), "act": bad_activations(),
        "lora_rank": bad_ints(none=True), "lora_alpha": bad_numbers(low=0, low_open=True, none=True),
        "packed": bad_flags()}),
    MoEBlock: (dict(router=lambda: TopKRouter(8, 4, 2), experts=lambda: GLUExperts(4, 8, 16)), {
        "router": bad_modules(), "experts": bad_modules(), "shared_experts": bad_modules().filter(lambda m: m is not None),
        "dispatch_backend": bad_choices(BACKENDS)}),
    FFNWeights: (dict(up=lambda: torch.randn(16, 8), down=lambda: torch.randn(8, 16), act="silu"), {
        "up": bad_tensors((16, 8)), "down": bad_tensors((8, 16)), "act": bad_activations(),
        "gate": bad_tensors((16, 8)).filter(lambda t: t is not None), "up_bias": bad_tensors((16,)).filter(lambda t: t is not None),
        "down_bias": bad_tensors((8,)).filter(lambda t: t is not None), "dropout": bad_numbers(low=0, high=1, high_open=True)}),
}


# -- building with one field changed -----------------------------------------------------------------
def build_config(cls, **fields):
    base = {"text_config": dict(LLAMA)} if "text_config" in declared_fields(cls) else {}
    return cls(**{**base, **fields})


def build_module(cls, **fields):
    defaults, _ = MODULE_CASES[cls]
    arguments = {name: value() if callable(value) else value for name, value in defaults.items()}
    return cls(**{**arguments, **fields})


def fields_of(cls) -> list[str]:
    if dataclasses.is_dataclass(cls) and cls is not FFNWeights:
        return list(declared_fields(cls))
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


CASES = [
    *[(cls, name, CONFIG_FIELDS[cls.__name__].get(name), build_config) for cls in CONFIG_CLASSES for name in fields_of(cls)],
    *[(UpcyclePlan, name, PLAN_FIELDS.get(name), build_config) for name in fields_of(UpcyclePlan)],
    *[(cls, name, table.get(name), build_module) for cls, (_, table) in MODULE_CASES.items() for name in fields_of(cls)],
]


def names_the_field(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) is not None


def test_every_class_and_every_field_is_fuzzed():
    assert {c.__name__ for c in CONFIG_CLASSES} == set(CONFIG_FIELDS), "a config class without a fuzz table"
    unfuzzed = [f"{cls.__name__}.{name}" for cls, name, strategy, _ in CASES if strategy is None]
    assert not unfuzzed, f"fields without bad values in the tables: {unfuzzed}"
    assert len(CASES) > 240


@pytest.mark.parametrize("cls, name, strategy, build", CASES, ids=[f"{c.__name__}.{n}" for c, n, _, _ in CASES])
@FUZZ
@given(data=st.data())
def test_a_wrong_value_is_refused_naming_the_field(cls, name, strategy, build, data):
    value = data.draw(strategy, label=name)
    try:
        built = build(cls, **{name: value})
    except (ValueError, TypeError) as error:
        assert names_the_field(str(error), name), f"{cls.__name__}({name}={value!r}): {type(error).__name__}: {error}"
    except Exception as error:  # noqa: BLE001 - an unrelated exception is the failure being tested for
        pytest.fail(f"{cls.__name__}({name}={value!r}) raised an unrelated {type(error).__name__}: {error}")
    else:
        pytest.fail(f"{cls.__name__}({name}={value!r}) was accepted: {built!r}"[:400])


@pytest.mark.parametrize("cls", [*CONFIG_CLASSES, UpcyclePlan, *MODULE_CASES], ids=lambda c: c.__name__)
def test_the_valid_baseline_builds(cls):
    (build_module if cls in MODULE_CASES else build_config)(cls)
