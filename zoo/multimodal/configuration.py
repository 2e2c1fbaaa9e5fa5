"""MultimodalMoeConfig: the fields every vision-language MoE of the zoo shares, and the dense baseline's
model type ("dense_vl"). A system subclasses it with its own fields and `validate_architecture`.

A typed `@strict` config as in transformers v5 (zoo.core.validation.strict_config): the annotations
check the types on every assignment, `validate_architecture` checks the values after `__init__` and
again before `save_pretrained`; every error names the class and the field.
"""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..core.validation import (check_choice, check_non_negative, check_positive_int, check_sub_configs, field_name,
                               renamed, strict_config)

DEFAULT_VISION_TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 128, "feature_layer": -1,
                        "weights": "mobilenet_v2"}
VISION_TOWER_KINDS = ("timm", "hf", "open_clip")  # zoo.multimodal.vision_towers
PROJECTOR_TYPES = ("mlp2x_gelu", "linear")  # zoo.multimodal.connectors
# model types saved under an older spelling: a config.json that still has one loads, with a FutureWarning
RENAMED_MODEL_TYPES = {"vl_dense": "dense_vl"}


def resolve_layers(spec, num_layers: int, owner=None) -> list[int]:
    """'all' | 'odd' | 'even' | 'none' | list of indices -> sorted layer indices."""
    named = {"all": range(num_layers), "odd": range(1, num_layers, 2), "even": range(0, num_layers, 2), "none": ()}
    name = field_name(owner, "moe_layers")
    if isinstance(spec, str):
        if spec not in named:
            raise ValueError(f"{name} must be one of {sorted(named)} or a list of layer indices, got {spec!r}")
        return list(named[spec])
    if any(not isinstance(i, int) or isinstance(i, bool) for i in spec):
        raise ValueError(f"{name} as a list must hold layer indices (ints), got {spec!r}")
    layers = sorted(set(spec))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"{name} {bad} outside the {num_layers} decoder layers")
    return layers


@strict_config
class MultimodalMoeConfig(PreTrainedConfig):
    r"""
    Shared fields of the vision-language wrapper (zoo.multimodal.modeling); as a config of its own, the
    dense baseline (model type "dense_vl": each chosen FFN is one expert, the FFN plus an optional LoRA delta).

    Args:
        text_config (`dict` or `PreTrainedConfig`): the language model's config (default: Llama).
        vision_tower (`dict`): tower spec for zoo.multimodal.vision_towers (default: MobileNetV2 at 128 px).
        projector_type (`str`, "mlp2x_gelu"): connector, "mlp2x_gelu" (LLaVA) or "linear".
        image_token_budget (`int`, *optional*): pool the tower's grid down to this many tokens per image.
        image_token_id (`int`, *optional*): the processor's <image> placeholder id.
        moe_layers (`str` or `list[int]`, "odd"): "all" | "odd" | "even" | "none" | layer indices.
        num_experts (`int`, 1), num_experts_per_tok (`int`, 1)
        expert_lora_rank (`int`, *optional*): None copies the dense FFN into every expert; an int trains
            per-expert LoRA deltas of that rank over it.
        router_aux_loss_coef (`float`, 0.0): weight of the balance loss.
    """

    model_type = "dense_vl"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    vision_tower: dict | None = None
    projector_type: str = "mlp2x_gelu"
    image_token_budget: int | None = None
    image_token_id: int | None = None
    moe_layers: str | list[int] | tuple[int, ...] = "odd"
    num_experts: int = 1
    num_experts_per_tok: int = 1
    expert_lora_rank: int | None = None
    router_aux_loss_coef: float | int = 0.0

    def __post_init__(self, **kwargs):
        saved_type = kwargs.pop("model_type", None)  # from a config.json: the class's own model_type is what counts
        if saved_type in RENAMED_MODEL_TYPES:
            renamed(saved_type, RENAMED_MODEL_TYPES, "model_type", stacklevel=4)
        self.vision_tower = dict(self.vision_tower if self.vision_tower is not None else DEFAULT_VISION_TOWER)
        if isinstance(self.moe_layers, tuple):
            self.moe_layers = list(self.moe_layers)
        check_sub_configs(self)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of @strict's validation (after __init__ and before save_pretrained); the types are checked
        by the annotations above."""
        super().validate_architecture()
        check_positive_int(self, num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok)
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"{type(self).__name__}.num_experts_per_tok ({self.num_experts_per_tok}) must be <= "
                             f"num_experts ({self.num_experts})")
        check_positive_int(self, allow_none=True, expert_lora_rank=self.expert_lora_rank,
                           image_token_budget=self.image_token_budget)
        check_non_negative(self, router_aux_loss_coef=self.router_aux_loss_coef)
        check_choice(self, "projector_type", self.projector_type, PROJECTOR_TYPES)
        check_choice(self, "vision_tower['kind']", self.vision_tower.get("kind"), VISION_TOWER_KINDS)
        resolve_layers(self.moe_layers, self.text_config.num_hidden_layers, self)

    @property
    def num_hidden_layers(self) -> int:  # generate() reads it
        return self.text_config.num_hidden_layers


class LegacyDenseVlConfig(MultimodalMoeConfig):
    """Model type "vl_dense", the dense baseline's spelling before it became "dense_vl" (= its system
    name). Registered so a saved config.json that still says "vl_dense" loads; what it builds is a
    MultimodalMoeConfig (saved again, it says "dense_vl"), with a FutureWarning naming the new spelling."""

    model_type = "vl_dense"

    def __new__(cls, **kwargs):
        return MultimodalMoeConfig(**{**kwargs, "model_type": cls.model_type})  # warns in __post_init__

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return MultimodalMoeConfig.from_dict({**config_dict, "model_type": cls.model_type}, **kwargs)


__all__ = ["DEFAULT_VISION_TOWER", "LegacyDenseVlConfig", "MultimodalMoeConfig", "RENAMED_MODEL_TYPES", "resolve_layers"]
