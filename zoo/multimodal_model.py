"""The LLaVA-style wrapper every vision-language MoE in the zoo shares (MoE-LLaVA, MoIIE, MoTE, and a
dense baseline): vision tower -> connector -> spliced into the LLM's embeddings -> decoder whose chosen
FFNs are MoE blocks that read the per-token modality id.

    pixel_values [n_img, 3, S, S] --tower (frozen)--> [n_img, N, C] --connector--> [n_img, N', H]
    input_ids [B, L] --embed + splice--> inputs_embeds [B, L, H], modality_ids [B, L]
    decoder layers: layer.mlp = MoeFeedForward(MoEBlock) on `moe_layers`, dense elsewhere
    loss = CE(answer tokens) + sum over MoE layers of the system's router losses

A system subclasses the config (its fields + validation) and the model (`build_moe_block`,
`router_aux_loss`). The dense FFN of each MoE layer is upcycled at construction: pass a loaded
`language_model` to copy real weights; `from_pretrained` builds from config and loads the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .connectors import Connector
from .moe import MoEBlock
from .routing import MODALITY_IDS, RoutingResult, TopKRouter
from .ternary import UpcycledGLUExperts
from .vision_towers import build_vision_tower

DEFAULT_VISION_TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 128, "feature_layer": -1,
                        "weights": "mobilenet_v2"}


def resolve_layers(spec, num_layers: int) -> list[int]:
    """'all' | 'odd' | 'even' | 'none' | list of indices -> sorted layer indices."""
    named = {"all": range(num_layers), "odd": range(1, num_layers, 2), "even": range(0, num_layers, 2), "none": ()}
    if isinstance(spec, str):
        if spec not in named:
            raise ValueError(f"moe_layers must be one of {sorted(named)} or a list of layer indices, got {spec!r}")
        return list(named[spec])
    layers = sorted(set(int(i) for i in spec))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"moe_layers {bad} outside the {num_layers} decoder layers")
    return layers


class MultimodalMoeConfig(PretrainedConfig):
    """Shared fields. `moe_layers` names which decoder FFNs become MoE blocks; `expert_lora_rank`
    None copies the dense FFN into every expert, an int trains per-expert LoRA deltas over it."""

    model_type = "vl_dense"
    sub_configs = {"text_config": AutoConfig}

    def __init__(self, text_config=None, vision_tower=None, projector_type: str = "mlp2x_gelu",
                 image_token_budget: int | None = None, image_token_id: int | None = None,
                 moe_layers="odd", num_experts: int = 1, num_experts_per_tok: int = 1,
                 expert_lora_rank: int | None = None, router_aux_loss_coef: float = 0.0, **kwargs):
        if isinstance(text_config, dict):
            text_config = AutoConfig.for_model(**text_config)
        if text_config is None:
            text_config = AutoConfig.for_model("llama")
        self.text_config = text_config
        self.vision_tower = dict(vision_tower or DEFAULT_VISION_TOWER)
        self.projector_type = projector_type
        self.image_token_budget = image_token_budget
        self.image_token_id = image_token_id
        self.moe_layers = moe_layers
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.expert_lora_rank = expert_lora_rank
        self.router_aux_loss_coef = router_aux_loss_coef
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        for name in ("num_experts", "num_experts_per_tok"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"num_experts_per_tok ({self.num_experts_per_tok}) > num_experts ({self.num_experts})")
        if self.expert_lora_rank is not None and (not isinstance(self.expert_lora_rank, int) or self.expert_lora_rank <= 0):
            raise ValueError(f"expert_lora_rank must be a positive integer or None, got {self.expert_lora_rank!r}")
        if self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")
        if "kind" not in self.vision_tower:
            raise ValueError(f"vision_tower must be a spec dict with a 'kind', got {self.vision_tower!r}")
        resolve_layers(self.moe_layers, self.text_config.num_hidden_layers)

    @property
    def num_hidden_layers(self) -> int:  # generate() reads it
        return self.text_config.num_hidden_layers


# -- dense FFN -> expert weights ----------------------------------------------------------------------
def dense_ffn_weights(mlp: nn.Module) -> dict:
    """The dense FFN of Llama/Qwen/Mistral (gate/up/down), Phi-3 (fused gate_up) or Phi-2 (fc1/fc2)."""
    if hasattr(mlp, "gate_up_proj") and isinstance(mlp.gate_up_proj, nn.Linear):  # Phi-3: gate rows first
        return {"kind": "glu", "gate_up": mlp.gate_up_proj.weight, "down": mlp.down_proj.weight}
    if all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return {"kind": "glu", "gate_up": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), "down": mlp.down_proj.weight}
    if hasattr(mlp, "fc1") and hasattr(mlp, "fc2"):
        return {"kind": "mlp", "up": mlp.fc1.weight, "up_bias": mlp.fc1.bias, "down": mlp.fc2.weight, "down_bias": mlp.fc2.bias}
    raise ValueError(f"cannot upcycle {type(mlp).__name__}: expected gate/up/down, gate_up_proj/down_proj or fc1/fc2")


class RoutingContext:
    """Per-forward routing inputs the wrapper sets and every MoE layer reads ([B, L] each)."""

    modality_ids: torch.Tensor | None = None
    padding_mask: torch.Tensor | None = None


class MoeFeedForward(nn.Module):
    """Drop-in for a decoder FFN: [B, S, H] -> [B, S, H] through an MoEBlock; keeps the last routing."""

    def __init__(self, block: MoEBlock, context: RoutingContext):
        super().__init__()
        self.block = block
        self.context = context
        self.last_routing: RoutingResult | None = None
        self.last_modality_ids: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        modality_ids, padding = self.context.modality_ids, self.context.padding_mask
        if modality_ids is None or modality_ids.shape != hidden.shape[:2]:
            # cached decoding feeds only new tokens, and those are text (as in MoIIE's code)
            modality_ids = hidden.new_full(hidden.shape[:2], MODALITY_IDS["text"], dtype=torch.long)
            padding = None
        out, routing = self.block(hidden, modality_ids=modality_ids, padding_mask=padding)
        self.last_routing, self.last_modality_ids = routing, modality_ids.reshape(-1)
        return out


@dataclass
class MultimodalMoeOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    modality_ids: torch.Tensor | None = None


class MultimodalMoeForConditionalGeneration(PreTrainedModel):
    """Dense baseline when subclasses do not override `build_moe_block`: each chosen FFN becomes a
    single expert (the FFN plus an optional LoRA delta) so it trains exactly like the MoE systems."""

    config_class = MultimodalMoeConfig
    base_model_prefix = "model"
    _no_split_modules = ["MoeFeedForward"]
    _supports_sdpa = True
    main_input_name = "input_ids"

    def __init__(self, config: MultimodalMoeConfig, language_model: PreTrainedModel | None = None,
                 load_tower_weights: bool = True):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config.vision_tower, load_weights=load_tower_weights)
        self.vision_tower.requires_grad_(False)  # frozen in every recipe of these papers
        text = config.text_config
        self.connector = Connector(config.projector_type, self.vision_tower.hidden_size, text.hidden_size,
                                   config.image_token_budget)
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(text)
        self.routing_context = RoutingContext()
        self.moe_layer_ids = resolve_layers(config.moe_layers, text.num_hidden_layers)
        for index in self.moe_layer_ids:
            layer = self.decoder_layers[index]
            layer.mlp = MoeFeedForward(self.build_moe_block(index, layer.mlp), self.routing_context)
        self.post_init()

    # -- what a system defines ---------------------------------------------------------------------
    def build_moe_block(self, layer_index: int, dense_mlp: nn.Module) -> MoEBlock:
        weights = dense_ffn_weights(dense_mlp)
        if weights["kind"] != "glu":
            raise ValueError("the dense baseline upcycles SwiGLU FFNs only")
        experts = UpcycledGLUExperts(1, weights["gate_up"], weights["down"], self.config.text_config.hidden_act,
                                     self.config.expert_lora_rank)
        return MoEBlock(TopKRouter(self.config.text_config.hidden_size, 1, 1), experts)

    def router_aux_loss(self, routing: RoutingResult) -> torch.Tensor:
        return self.config.router_aux_loss_coef * routing.aux_losses["load_balance"]

    # -- pieces --------------------------------------------------------------------------------------
    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.model.layers

    def moe_feed_forwards(self) -> list[MoeFeedForward]:
        return [self.decoder_layers[i].mlp for i in self.moe_layer_ids]

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
        from .multimodal import splice_image_features

        if self.config.image_token_id is None:
            raise ValueError("config.image_token_id is not set (the processor's <image> token id)")
        is_image = input_ids == self.config.image_token_id
        text_embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(is_image, 0))  # [B, L, H]
        features = None if pixel_values is None or pixel_values.shape[0] == 0 else self.image_features(pixel_values)
        return splice_image_features(input_ids, text_embeds, features, self.config.image_token_id)

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, labels=None, inputs_embeds=None,
                modality_ids=None, output_router_logits: bool = False, logits_to_keep: int = 0, **kwargs):
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with pixel_values for the image placeholders) or inputs_embeds")
            inputs_embeds, modality_ids = self.embed(input_ids, pixel_values)  # [B, L, H], [B, L]
        elif modality_ids is None:
            modality_ids = torch.full(inputs_embeds.shape[:2], MODALITY_IDS["text"], dtype=torch.long,
                                      device=inputs_embeds.device)
        self.routing_context.modality_ids = modality_ids
        self.routing_context.padding_mask = None if attention_mask is None else attention_mask.bool()
        try:
            hidden = self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                               **kwargs).last_hidden_state  # [B, L, H]
        finally:
            self.routing_context.modality_ids = self.routing_context.padding_mask = None
        routings = [ffn.last_routing for ffn in self.moe_feed_forwards()]
        aux_loss = sum((self.router_aux_loss(r) for r in routings), hidden.new_zeros((), dtype=torch.float32))
        lm_head = self.language_model.get_output_embeddings()
        loss = logits = None
        if labels is not None:
            # only the supervised positions reach the vocabulary head (it dominates the cost otherwise)
            targets = labels[:, 1:]
            keep = targets != -100  # [B, L-1]
            if not keep.any():
                raise ValueError("labels supervise no token (all -100)")
            logits = lm_head(hidden[:, :-1][keep]).float()  # [n_supervised, V]
            loss = F.cross_entropy(logits, targets[keep]) + aux_loss
        else:
            logits = lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        return MultimodalMoeOutput(
            loss=loss, logits=logits, aux_loss=aux_loss, modality_ids=modality_ids,
            router_logits=tuple(r.logits for r in routings) if output_router_logits else None,
        )

    # -- inference helpers (short answers: no KV cache needed) -------------------------------------------
    @torch.no_grad()
    def greedy_answer(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, stop_ids, max_new_tokens: int = 8):
        """One sample [1, L]: greedy tokens until a stop id; -> (new token ids, routing per MoE layer of the prompt)."""
        inputs_embeds, modality_ids = self.embed(input_ids, pixel_values)
        new_ids, prompt_routing = [], None
        for _ in range(max_new_tokens):
            out = self(inputs_embeds=inputs_embeds, modality_ids=modality_ids, logits_to_keep=1)
            if prompt_routing is None:
                prompt_routing = [(f.last_routing, f.last_modality_ids) for f in self.moe_feed_forwards()]
            token = int(out.logits[0, -1].argmax())
            if token in stop_ids:
                break
            new_ids.append(token)
            embed = self.language_model.get_input_embeddings()(torch.tensor([[token]]))
            inputs_embeds = torch.cat([inputs_embeds, embed.to(inputs_embeds.dtype)], dim=1)
            modality_ids = torch.cat([modality_ids, modality_ids.new_zeros(1, 1)], dim=1)
        return new_ids, prompt_routing


def parameter_counts(model: MultimodalMoeForConditionalGeneration) -> dict[str, int]:
    """total, activated (per token: k of E experts in each MoE layer), and the vision tower's share."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for ffn in model.moe_feed_forwards():
        experts = ffn.block.experts
        per_expert = sum(p.numel() for p in experts.parameters()) // experts.num_experts
        inactive += (experts.num_experts - model.config.num_experts_per_tok) * per_expert
    tower = sum(p.numel() for p in model.vision_tower.parameters())
    return {"total": total, "activated": total - inactive, "vision_tower": tower}


def build_on_meta(model_class, config) -> MultimodalMoeForConditionalGeneration:
    """A paper-size model without memory or weights (parameter counting, converter dry runs)."""
    with torch.device("meta"):
        return model_class(config, load_tower_weights=False)
