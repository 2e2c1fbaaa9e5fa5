"""UpcycledMoeConfig: a dense decoder's config plus the plan that turned its FFNs into MoE layers."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ...core.validation import check_non_negative, check_sub_configs, strict_config
from ...upcycling.ffn_adapters import ARCHITECTURES
from ...upcycling.plan import UpcyclePlan


@strict_config
class UpcycledMoeConfig(PreTrainedConfig):
    r"""
    Configuration of [`UpcycledMoeForCausalLM`]: the dense base model's own config (`text_config`, any
    supported architecture: llama, mistral, qwen2, qwen3, gemma3_text, phi3, gpt2) and the
    [`zoo.UpcyclePlan`] (`plan`, stored as a dict) that replaced its FFNs with MoE layers. The
    model is rebuilt from these two, so a saved upcycled model loads with `AutoModelForCausalLM`.

    The sub-config is called `text_config` (transformers' name for the language part of a composite
    model), so `generate()`, caches and `resize_token_embeddings` find the decoder's sizes there.

    Args:
        text_config (`dict` or `PreTrainedConfig`): the dense base model's config.
        plan (`dict` or `UpcyclePlan`): how the FFNs were upcycled (default: "top2-of-4").
        router_aux_loss_coef (`float`, *optional*): weight of the load-balancing loss added to the LM loss
            whenever labels are given; defaults to the plan's value (0.001 Mixtral, 0.01 MoE-LLaVA / XMoE).
        router_z_loss_coef (`float`, *optional*): weight of the router z-loss; defaults to the plan's value.
        output_router_logits (`bool`): return every MoE layer's router logits by default.

    ```python
    >>> import zoo
    >>> from transformers import LlamaConfig
    >>> config = zoo.models.upcycled.UpcycledMoeConfig(text_config=LlamaConfig(), plan=zoo.PLANS["top2-of-4"])
    ```"""

    model_type = "zoo_upcycled_moe"
    # transformers' tensor parallelism for the MoE layers, relative to each one (`...layers.N.mlp`): Mixtral's
    # rules for the same [E, 2I, H] / [E, H, I] layout. The model adds them to its decoder's own plan
    # (zoo.integrations.parallel_plans, which also says why there is no base_model_ep_plan).
    moe_layer_tp_plan = {"moe.experts.gate_up_proj": "packed_colwise", "moe.experts.down_proj": "rowwise",
                         "moe.experts": "moe_tp_experts"}
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    plan: dict | UpcyclePlan | None = None
    router_aux_loss_coef: float | int | None = None
    router_z_loss_coef: float | int | None = None
    output_router_logits: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        check_sub_configs(self)
        super().__post_init__(**kwargs)
        self.validate_text_config()  # before the plan is read: a wrong architecture is the first thing to report
        plan = self.resolve_plan()
        self.plan = plan.to_dict()
        if self.router_aux_loss_coef is None:
            self.router_aux_loss_coef = plan.router_aux_loss_coef
        if self.router_z_loss_coef is None:
            self.router_z_loss_coef = plan.router_z_loss_coef
        # the decoder's embeddings are tied (or not) by the base model itself
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))

    def resolve_plan(self) -> UpcyclePlan:
        if self.plan is None:
            return UpcyclePlan()
        if isinstance(self.plan, UpcyclePlan):
            return self.plan
        try:
            return UpcyclePlan.from_dict(self.plan)  # validates every field
        except (TypeError, ValueError) as error:  # the plan's own message names its field, this one names ours
            raise type(error)(f"{type(self).__name__}.plan: {error}") from error

    def validate_text_config(self) -> None:
        if self.text_config.model_type not in ARCHITECTURES:
            raise ValueError(
                f"{type(self).__name__}.text_config: architecture {self.text_config.model_type!r} cannot be upcycled; "
                f"supported: {sorted(ARCHITECTURES)}"
            )

    def validate_architecture(self) -> None:
        """Part of @strict's validation (after __init__ and before save_pretrained); the plan was checked
        field by field when it became an UpcyclePlan, the types by the annotations."""
        super().validate_architecture()
        check_non_negative(self, router_aux_loss_coef=self.router_aux_loss_coef, router_z_loss_coef=self.router_z_loss_coef)

    @property
    def upcycle_plan(self) -> UpcyclePlan:
        return UpcyclePlan.from_dict(self.plan)

    @property
    def num_experts(self) -> int:
        return self.plan["num_experts"]

    @property
    def num_experts_per_tok(self) -> int:
        return self.plan["num_experts_per_tok"]


__all__ = ["UpcycledMoeConfig"]
