"""The LLaVA-style wrapper every vision-language MoE in the zoo shares (MoE-LLaVA, MoIIE, MoTE, and a
dense baseline): vision tower -> connector -> spliced into the LLM's embeddings -> decoder whose chosen
FFNs are MoE blocks that read the per-token modality id.

    pixel_values [n_img, 3, S, S] --tower (frozen)--> [n_img, N, C] --connector--> [n_img, N', H]
    input_ids [B, L] --embed + splice--> inputs_embeds [B, L, H], modality_ids [B, L]
    decoder layers: layer.mlp = zoo.upcycle's UpcycledFFN(MoEBlock) on `moe_layers`, dense elsewhere
    loss = CE(answer tokens) + sum over MoE layers of the system's router losses

A system subclasses the config (its fields + validation) and the model (`upcycle_plan`: its config as a
zoo.UpcyclePlan; `router_aux_loss`). The language model is upcycled at construction by
`zoo.upcycle(language_model, plan)`: pass a loaded `language_model` to copy real weights;
`from_pretrained` builds from config and loads the checkpoint. `generate()` works as for LLaVA: the
image features are spliced on the prefill step only, cached decoding feeds text tokens (modality 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from ..core.modalities import MODALITY_IDS
from ..core.modality_router import ModalityRouter
from ..core.routing import RoutingResult
from ..core.validation import check_id_tensor
from ..integrations.checkpoint_keys import StrictMoeLoading
from ..upcycling.layer import UpcycledFFN
from ..upcycling.plan import UpcyclePlan
from ..upcycling.sparse_upcycling import upcycle
from .causal import keep_causal
from .configuration import DEFAULT_VISION_TOWER, MultimodalMoeConfig, resolve_layers
from .connectors import Connector
from .processing import splice_image_features
from .vision_towers import build_vision_tower

__all__ = ["DEFAULT_VISION_TOWER", "MultimodalMoeConfig", "MultimodalMoeForConditionalGeneration", "MultimodalMoeOutput",
           "build_on_meta", "parameter_counts", "resolve_layers"]


@dataclass
class MultimodalMoeOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    modality_ids: torch.Tensor | None = None


class MultimodalMoeForConditionalGeneration(StrictMoeLoading, PreTrainedModel, GenerationMixin):
    """Dense baseline when subclasses do not override `upcycle_plan`: each chosen FFN becomes a
    single expert (the FFN plus an optional LoRA delta) so it trains exactly like the MoE systems."""

    config_class = MultimodalMoeConfig
    base_model_prefix = "model"
    _no_split_modules = ["UpcycledFFN"]
    _supports_sdpa = True
    main_input_name = "input_ids"

    def __init__(self, config: MultimodalMoeConfig, language_model: PreTrainedModel | None = None,
                 load_tower_weights: bool = True):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config.vision_tower, load_weights=load_tower_weights)
        self.vision_tower.requires_grad_(False).eval()  # frozen (weights and BatchNorm statistics) in every recipe
        text = config.text_config
        self.connector = Connector(config.projector_type, self.vision_tower.hidden_size, text.hidden_size,
                                   config.image_token_budget)
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(text)
        keep_causal(self.language_model, config)
        self.moe_layer_ids = resolve_layers(config.moe_layers, text.num_hidden_layers)
        if self.moe_layer_ids:
            upcycle(self.language_model, self.upcycle_plan())
        if load_tower_weights:
            # post_init() re-initialises every module not flagged as loaded (BatchNorm -> identity stats,
            # convs -> N(0, 0.02)); the tower's packaged weights were loaded above and must survive it
            for module in self.vision_tower.modules():
                module._is_hf_initialized = True
        self.post_init()

    # -- what a system defines ---------------------------------------------------------------------
    def upcycle_plan(self) -> UpcyclePlan:
        """The system's config as a zoo.UpcyclePlan; the dense baseline: one expert, always chosen."""
        return UpcyclePlan(num_experts=1, num_experts_per_tok=1, **self.expert_plan_fields())

    def expert_plan_fields(self) -> dict:
        """Plan fields every system shares: where the MoE layers are and what an expert is
        (full copies of the dense FFN, or expert kind "lora" at scaling 1: alpha = rank)."""
        rank = self.config.expert_lora_rank
        fields = {"layers": self.moe_layer_ids, "router_aux_loss_coef": self.config.router_aux_loss_coef}
        if rank is not None:
            fields.update(expert_kind="lora", expert_options={"rank": rank, "alpha": rank})
        return fields

    def router_aux_loss(self, routing: RoutingResult) -> torch.Tensor:
        return self.config.router_aux_loss_coef * routing.aux_losses["load_balance"]

    # -- pieces --------------------------------------------------------------------------------------
    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.model.layers

    @property
    def routing_context(self):
        return self.language_model.routing_context

    def moe_feed_forwards(self) -> list[UpcycledFFN]:
        return [self.decoder_layers[i].mlp for i in self.moe_layer_ids]

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_tower.eval()  # frozen BatchNorm statistics
        return self

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:  # -> [n_img, N', H]
        with torch.no_grad():
            grid = self.vision_tower(pixel_values.to(next(self.vision_tower.parameters()).dtype))  # [n, N, C]
        return self.connector(grid.to(next(self.connector.parameters()).dtype))

    def num_image_tokens(self) -> int:
        size = self.vision_tower.image_size
        device = next(self.vision_tower.parameters()).device
        with torch.no_grad():
            return self.image_features(torch.zeros(1, 3, size, size, device=device)).shape[1]

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None):
        if self.config.image_token_id is None:
            raise ValueError("config.image_token_id is not set (the processor's <image> token id)")
        is_image = input_ids == self.config.image_token_id
        text_embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(is_image, 0))  # [B, L, H]
        features = None if pixel_values is None or pixel_values.shape[0] == 0 else self.image_features(pixel_values)
        return splice_image_features(input_ids, text_embeds, features, self.config.image_token_id)

    # -- forward -------------------------------------------------------------------------------------
    def check_modality_ids(self, modality_ids, tokens: tuple[int, int]) -> None:
        check_id_tensor(type(self), "modality_ids", modality_ids, tokens,
                        note="one zoo.MODALITY_IDS id per token of this forward; with a KV cache, the new tokens only")

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache: bool | None = None, modality_ids=None,
                output_router_logits: bool = False, logits_to_keep: int = 0, **kwargs):
        """input_ids [B, S] (with pixel_values on the prefill step only; cached decoding feeds the new
        text tokens, S = 1), attention_mask [B, past + S], past_key_values: the language model's cache."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with pixel_values for the image placeholders) or inputs_embeds")
            inputs_embeds, spliced_ids = self.embed(input_ids, pixel_values)  # [B, S, H], [B, S]
            if modality_ids is not None:  # never replaced silently: they must say what input_ids say
                self.check_modality_ids(modality_ids, tuple(spliced_ids.shape))
                wrong = (modality_ids.to(spliced_ids.device) != spliced_ids).sum().item()
                if wrong:
                    raise ValueError(f"{type(self).__name__}: modality_ids disagree with the image placeholders of "
                                     f"input_ids at {wrong} positions; pass input_ids alone (the ids follow from them)")
            modality_ids = spliced_ids
        elif modality_ids is not None:
            self.check_modality_ids(modality_ids, tuple(inputs_embeds.shape[:2]))
        else:
            if any(isinstance(ffn.moe.router, ModalityRouter) for ffn in self.moe_feed_forwards()):
                raise ValueError(
                    f"{type(self).__name__}: inputs_embeds without modality_ids, but this model's MoE layers use a "
                    f"modality router: pass modality_ids [B, S] = {tuple(inputs_embeds.shape[:2])} (zoo.MODALITY_IDS "
                    "per token) with inputs_embeds, or input_ids (+ pixel_values), from which they follow")
            modality_ids = torch.full(inputs_embeds.shape[:2], MODALITY_IDS["text"], dtype=torch.long,
                                      device=inputs_embeds.device)  # dense / top-k layers: all text
        if use_cache is None and labels is not None:
            use_cache = False  # a training / scoring forward keeps no KV cache
        padding_mask = None
        if attention_mask is not None and attention_mask.dim() == 2:
            padding_mask = attention_mask[:, -inputs_embeds.shape[1]:].bool()  # the current tokens' columns
        if self.moe_layer_ids:  # stays set after the forward: activation checkpointing recomputes the layers in backward
            self.routing_context.set(modality_ids, None, padding_mask)
        outputs = self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            position_ids=position_ids, past_key_values=past_key_values,
                                            use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state  # [B, S, H]
        routings = [ffn.last_routing for ffn in self.moe_feed_forwards()]
        aux_loss = sum((self.router_aux_loss(r) for r in routings), hidden.new_zeros((), dtype=torch.float32))
        lm_head = self.language_model.get_output_embeddings()
        loss = logits = None
        if labels is not None:
            # only the supervised positions reach the vocabulary head (it dominates the cost otherwise)
            targets = labels[:, 1:]
            keep = targets != -100  # [B, S-1]
            if not keep.any():
                raise ValueError("labels supervise no token (all -100)")
            logits = lm_head(hidden[:, :-1][keep]).float()  # [n_supervised, V]
            loss = F.cross_entropy(logits, targets[keep]) + aux_loss
        else:
            logits = lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        return MultimodalMoeOutput(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, aux_loss=aux_loss,
            modality_ids=modality_ids, router_logits=tuple(r.logits for r in routings) if output_router_logits else None,
        )


def parameter_counts(model: MultimodalMoeForConditionalGeneration) -> dict[str, int]:
    """total, activated (per token: k of E experts in each MoE layer), and the vision tower's share."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for ffn in model.moe_feed_forwards():
        experts = ffn.moe.experts
        per_expert = sum(p.numel() for p in experts.parameters()) // experts.num_experts
        inactive += (experts.num_experts - model.config.num_experts_per_tok) * per_expert
    tower = sum(p.numel() for p in model.vision_tower.parameters())
    return {"total": total, "activated": total - inactive, "vision_tower": tower}


def build_on_meta(model_class, config) -> MultimodalMoeForConditionalGeneration:
    """A paper-size model without memory or weights (parameter counting, converter dry runs)."""
    with torch.device("meta"):
        return model_class(config, load_tower_weights=False)
