"""UpcycledMoeForCausalLM: a dense Hugging Face decoder whose FFNs were upcycled into MoE layers.

    config.text_config  --AutoModelForCausalLM class-->  dense decoder (Llama, Qwen, Gemma3, Phi-3, GPT-2, ...)
    config.plan         --zoo.upcycle-->                 chosen layers' mlp = UpcycledFFN(MoEBlock)
    forward:  routing context (modality_ids, expert_mask, padding) -> decoder -> logits, LM loss
              + router_aux_loss_coef * mean_layers(load balance) + router_z_loss_coef * mean_layers(z-loss)

The decoder keeps its own attention, cache and generation code, so `generate()` (with or without KV
cache), `device_map`, gradient checkpointing and PEFT behave as for the dense model.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import MoeCausalLMOutputWithPast
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from ...core.expert_banks import ExpertBank
from ...core.routing import Router
from ...integrations.checkpoint_keys import StrictMoeLoading
from ...integrations.parallel_plans import moe_tensor_parallel_plan
from ...upcycling.layer import UpcycledFFN, upcycled_layers
from ...upcycling.plan import UpcyclePlan, get_plan
from ...upcycling.sparse_upcycling import upcycle
from .configuration_upcycled_moe import UpcycledMoeConfig


class UpcycledMoePreTrainedModel(StrictMoeLoading, PreTrainedModel):
    config_class = UpcycledMoeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["UpcycledFFN"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # routing has data-dependent shapes

    def _init_weights(self, module):
        # Experts and routers are initialised by the upcycling itself (copies/splits of the dense FFN,
        # the plan's router init); a fresh init here would undo function preservation.
        if isinstance(module, (Router, ExpertBank, UpcycledFFN)):
            return
        super()._init_weights(module)


class UpcycledMoeForCausalLM(UpcycledMoePreTrainedModel, GenerationMixin):
    def __init__(self, config: UpcycledMoeConfig):
        super().__init__(config)
        decoder_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config.text_config)]
        # the dense decoder, then its FFNs upcycled: the same structure `zoo.upcycle` gives a loaded model
        self.model = upcycle(decoder_class(config.text_config), config.upcycle_plan)
        self.config.text_config = self.model.config  # one config object, so resize_token_embeddings updates both
        for _, ffn in upcycled_layers(self.model):
            for module in ffn.modules():  # initialised by the plan; keep post_init's generic init away
                module._is_hf_initialized = True
        self.post_init()

    @classmethod
    def from_dense(cls, model: PreTrainedModel, plan: UpcyclePlan | str) -> "UpcycledMoeForCausalLM":
        """Upcycle a loaded dense model (in place, no weight copy beyond the experts) and wrap it."""
        return cls.wrap(upcycle(model, get_plan(plan) if isinstance(plan, str) else plan))

    @classmethod
    def wrap(cls, model: PreTrainedModel) -> "UpcycledMoeForCausalLM":
        """A causal LM already upcycled in place by `zoo.upcycle`, as this class (the same modules, no copy): its
        `save_pretrained` folder carries the plan, so `AutoModelForCausalLM.from_pretrained` rebuilds the experts."""
        plan = getattr(model, "upcycle_plan", None)
        if plan is None or not upcycled_layers(model):
            raise ValueError(f"{type(model).__name__} has no upcycled layers: call zoo.upcycle(model, plan) first, "
                             "or UpcycledMoeForCausalLM.from_dense(model, plan)")
        if type(model.config) not in MODEL_FOR_CAUSAL_LM_MAPPING or model.get_output_embeddings() is None:
            raise ValueError(f"{type(model).__name__} is not a causal language model (no LM head): an upcycled "
                             f"{type(model).__name__} cannot be saved as UpcycledMoeForCausalLM; upcycle the task "
                             "model instead (AutoModelForCausalLM.from_pretrained, then zoo.upcycle)")
        config = cls.config_class(text_config=model.config, plan=plan)
        with torch.device("meta"):  # skeleton only; the upcycled decoder is put in below
            wrapper = cls(config)
        wrapper.model = model
        wrapper.config.text_config = model.config
        wrapper.config.dtype = model.dtype
        return wrapper

    def init_parallel_plans(self) -> None:
        super().init_parallel_plans()  # the decoder's plan (attention, embeddings, head)
        self._tp_plan = moe_tensor_parallel_plan(self, self._tp_plan, self.config.moe_layer_tp_plan)

    # -- embeddings, delegated to the decoder ---------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.model.set_output_embeddings(value)

    @property
    def routing_context(self):
        return self.model.routing_context

    def moe_layers(self) -> list[tuple[str, UpcycledFFN]]:
        return upcycled_layers(self.model)

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # [B, S]
        attention_mask: torch.Tensor | None = None,  # [B, past + S]
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,  # [B, S, H]
        labels: torch.LongTensor | None = None,  # [B, S]
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        modality_ids: torch.LongTensor | None = None,  # [B, S] zoo.MODALITY_IDS per token (modality router)
        expert_mask: torch.Tensor | None = None,  # [E], [B, E] or [B, S, E]: bool allowed / float bias
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> MoeCausalLMOutputWithPast:
        output_router_logits = self.config.output_router_logits if output_router_logits is None else output_router_logits
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("pass input_ids or inputs_embeds")
        tokens = tuple(reference.shape[:2])  # [B, S]
        if modality_ids is None and self.config.upcycle_plan.router == "modality":
            raise ValueError(
                f"{type(self).__name__}: this model's MoE layers use a modality router (UpcyclePlan router='modality'), "
                f"so pass modality_ids [B, S] = {tokens} (zoo.MODALITY_IDS per token; all zeros = all text) to "
                "forward() and to generate()"
            )
        if modality_ids is not None and tuple(modality_ids.shape) != tokens:
            raise ValueError(f"modality_ids must have shape {tokens} like the inputs, got {tuple(modality_ids.shape)}")
        padding_mask = None
        if attention_mask is not None and attention_mask.dim() == 2:
            padding_mask = attention_mask[:, -tokens[1]:].bool()  # the current tokens' columns

        # The context stays set after the forward: activation checkpointing recomputes the layers in backward.
        self.model.routing_context.set(modality_ids, expert_mask, padding_mask)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
            logits_to_keep=logits_to_keep, **kwargs,
        )
        routings = [ffn.last_routing for _, ffn in self.moe_layers()]
        loss = outputs.loss
        aux_loss = None
        # the router losses are computed when something can use them: a loss, a backward, or router logits asked for
        # (inference without labels skips them, as transformers' MoEs do without output_router_logits)
        if loss is not None or output_router_logits or torch.is_grad_enabled():
            aux_loss = torch.stack([r.aux_losses["load_balance"] for r in routings]).mean()
        if loss is not None:  # labels given: the router losses are part of the objective, no opt-in needed
            z_loss = torch.stack([r.aux_losses["z_loss"] for r in routings]).mean()
            if self.config.router_aux_loss_coef:
                loss = loss + self.config.router_aux_loss_coef * aux_loss.to(loss.device)
            if self.config.router_z_loss_coef:
                loss = loss + self.config.router_z_loss_coef * z_loss.to(loss.device)
        return MoeCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=tuple(r.logits for r in routings) if output_router_logits else None,  # [T, E] per MoE layer
        )

    # -- generation: modality ids follow the tokens ----------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, modality_ids=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if modality_ids is not None:
            if kwargs.get("inputs_embeds") is None and tuple(modality_ids.shape) != tuple(input_ids.shape):
                # the ids of the whole sequence so far, kept in step by _update_model_kwargs_for_generation: a
                # flattened, transposed or shifted tensor would otherwise be sliced into the wrong tokens' ids
                raise ValueError(f"modality_ids must have shape {tuple(input_ids.shape)} like the input_ids given to "
                                 f"generate(), got {tuple(modality_ids.shape)}")
            current = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
            inputs["modality_ids"] = modality_ids[:, -current.shape[1]:]
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)
        if (ids := model_kwargs.get("modality_ids")) is not None:  # generated tokens are text (id 0)
            model_kwargs["modality_ids"] = torch.cat([ids, ids.new_zeros(ids.shape[0], num_new_tokens)], dim=-1)
        return model_kwargs


__all__ = ["UpcycledMoeForCausalLM", "UpcycledMoePreTrainedModel"]


def save_in_place_upcycled(model: PreTrainedModel, save_directory, *args, **kwargs):
    """`save_pretrained` of a transformers model upcycled in place (zoo.upcycle binds it): saved under its own dense
    config, transformers would reload it as the dense model and drop every expert, so it is saved as
    UpcycledMoeForCausalLM instead."""
    return UpcycledMoeForCausalLM.wrap(model).save_pretrained(save_directory, *args, **kwargs)
