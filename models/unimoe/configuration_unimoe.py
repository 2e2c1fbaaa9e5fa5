"""UniMoeConfig: Uni-MoE (arXiv 2405.11273) - one LLM whose FFNs are LoRA experts from different dense
sources, reading text, images, videos and speech.

Defaults are the v1 4E speech model's (the paper's MoE-Task2): Vicuna-7B-v1.5 (Llama-2 7B dimensions;
transformers' LlamaConfig defaults), CLIP ViT-L/14-336 at layer -2 with LLaVA's mlp2x_gelu projector,
Whisper-small's encoder + its decoder as a Q-Former with 50 queries per 30 s chunk, every decoder FFN a
top-2-of-4 MoE layer of LoRA experts (r = 8, alpha = 16), dropless, no auxiliary loss (v1 applies none).
The 8e model (models.unimoe.presets) sets 8 experts, the Gumbel 2nd choice and the losses.
"""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
import copy

from zoo.core.modalities import MODALITY_IDS
from zoo.core.validation import (FieldTypeError, check_bool, check_non_negative, check_non_negative_int, check_number,
                                 check_positive_int, strict_config)
from zoo.multimodal.configuration import MultimodalMoeConfig
from zoo.upcycling.ffn_adapters import ARCHITECTURES
from zoo.upcycling.plan import expert_indices

# openai/clip-vit-large-patch14-336 (vision part), as a zoo.multimodal.vision_towers spec; LLaVA reads layer -2
CLIP_VIT_L14_336 = {"kind": "hf", "feature_layer": -2, "config": {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "patch_size": 14, "image_size": 336, "projection_dim": 768}}
# openai/whisper-small, as a zoo.multimodal.audio_tower spec (random init: no small weights ship here;
# {"kind": "whisper", "name": "tiny.en", "weights": "packaged"} is a real Whisper that does)
WHISPER_SMALL = {"kind": "whisper", "config": {
    "d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_layers": 12,
    "decoder_attention_heads": 12, "decoder_ffn_dim": 3072, "num_mel_bins": 80, "max_source_positions": 1500,
    "max_target_positions": 448, "vocab_size": 51865}}
DESIGNATED = ("image", "audio", "video")  # modalities that may have designated experts ({m}_expert_indices)


@strict_config
class UniMoeConfig(MultimodalMoeConfig):
    r"""
    Configuration of [`UniMoeForConditionalGeneration`]. Besides MultimodalMoeConfig's fields
    (`text_config`, `vision_tower`, `projector_type`, `image_token_id`, `moe_layers`, `num_experts`,
    `num_experts_per_tok`, `expert_lora_rank`, `router_aux_loss_coef`):

    Args:
        expert_lora_rank (`int`, 8), expert_lora_alpha (`float`, 16): each expert's LoRA on its frozen FFN
            (scaling alpha / r); rank None makes the experts full trainable FFNs instead.
        expert_sources (`list[str]`, *optional*): the dense source of each expert slot (e.g. ["mlp_base",
            "mlp_base1", "mlp_base4", "mlp_base7"]); with it every expert has its own frozen FFN ([E, ...]
            weights, filled by `load_expert_sources` or the converter). None: one frozen FFN, the language
            model's own, shared by all experts.
        router_gumbel_second (`bool`, False): the 2nd expert is drawn with Gumbel noise in training (8e's DeepSpeed gate).
        capacity_factor (`float`, *optional*): None = dropless (both releases).
        router_aux_loss_coef (`float`, 0.0): GShard balance loss E^2 * mean_e(me_e * ce_e) (top-1 counts; 8e's
            `aux_balance_loss_coef`).
        modality_l1_loss_coef (`float`, 0.0): the loss pulling image / audio / video tokens to their experts
            (`{image,audio,video}_expert_indices`; 8e's `aux_multimodal_loss_coef`).
        modality_kl_loss_coef (`float`, 0.0): mean over modality pairs of 1 - KL(mean gate A || mean gate B)
            (8e's `aux_kl_loss_coef`).
        image_expert_indices, audio_expert_indices, video_expert_indices (`list[int]`, *optional*): designated experts.
        video_token_id (`int`, *optional*), max_video_frames (`int`, 32): the `<video>` placeholder id; frames
            per video the model accepts (each video is mean-pooled to one image's tokens).
        audio_tower (`dict`): zoo.multimodal.audio_tower spec (default: Whisper-small's architecture); the
            Q-Former is the decoder of the same Whisper.
        audio_token_id (`int`, *optional*), num_audio_query_tokens (`int`, 50): the `<audio>` placeholder id;
            Q-Former queries (= LLM tokens) per 30 s chunk.
    """

    model_type = "unimoe"

    moe_layers: str | list[int] | tuple[int, ...] = "all"
    num_experts: int = 4
    num_experts_per_tok: int = 2
    expert_lora_rank: int | None = 8
    expert_lora_alpha: float | int = 16
    expert_sources: list[str] | None = None
    router_gumbel_second: bool = False
    capacity_factor: float | int | None = None
    router_aux_loss_coef: float | int = 0.0
    modality_l1_loss_coef: float | int = 0.0
    modality_kl_loss_coef: float | int = 0.0
    image_expert_indices: list[int] | None = None
    audio_expert_indices: list[int] | None = None
    video_expert_indices: list[int] | None = None
    video_token_id: int | None = None
    max_video_frames: int = 32
    audio_tower: dict | None = None
    audio_token_id: int | None = None
    num_audio_query_tokens: int = 50

    def __post_init__(self, **kwargs):
        if self.vision_tower is None:
            self.vision_tower = copy.deepcopy(CLIP_VIT_L14_336)
        if self.audio_tower is None:
            self.audio_tower = copy.deepcopy(WHISPER_SMALL)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Every field, each error naming it (run after __init__ and before save_pretrained)."""
        super().validate_architecture()
        adapter = ARCHITECTURES.get(self.text_config.model_type)
        if adapter is None or adapter.fc_names or adapter.conv1d:
            raise ValueError(f"UniMoeConfig.text_config: Uni-MoE's LoRA experts need a gated (SwiGLU) decoder, got "
                             f"{self.text_config.model_type!r}; supported: "
                             f"{sorted(k for k, a in ARCHITECTURES.items() if not (a.fc_names or a.conv1d))}")
        check_number(self, "expert_lora_alpha", self.expert_lora_alpha, low=0, low_open=True)
        check_number(self, "capacity_factor", self.capacity_factor, low=0, low_open=True, allow_none=True,
                     note="(None = dropless)")
        check_bool(self, router_gumbel_second=self.router_gumbel_second)
        check_non_negative(self, modality_l1_loss_coef=self.modality_l1_loss_coef,
                           modality_kl_loss_coef=self.modality_kl_loss_coef)
        check_positive_int(self, max_video_frames=self.max_video_frames, num_audio_query_tokens=self.num_audio_query_tokens)
        for name in ("video_token_id", "audio_token_id"):  # placeholders are vocabulary ids here
            if getattr(self, name) is not None:
                check_non_negative_int(self, **{name: getattr(self, name)})
        if self.expert_sources is not None:
            sources = self.expert_sources
            if not isinstance(sources, list) or any(not isinstance(s, str) or not s for s in sources):
                raise FieldTypeError(f"UniMoeConfig.expert_sources must be a list of source names, got {sources!r}")
            if len(sources) != self.num_experts:
                raise ValueError(f"UniMoeConfig.expert_sources names {len(sources)} sources, one per expert is needed "
                                 f"(num_experts={self.num_experts})")
        designated = self.designated_experts()
        if self.modality_l1_loss_coef > 0 and not designated:
            raise ValueError("UniMoeConfig.modality_l1_loss_coef > 0 needs designated experts: set image_expert_indices, "
                             "audio_expert_indices or video_expert_indices")
        if not isinstance(self.audio_tower, dict) or self.audio_tower.get("kind") != "whisper":
            raise ValueError(f"UniMoeConfig.audio_tower must be a spec dict with kind 'whisper', got {self.audio_tower!r}")

    def designated_experts(self) -> dict[int, list[int]]:
        """{modality id: expert indices} for the modality L1 loss (zoo.core.modalities ids), validated."""
        out = {}
        for modality in DESIGNATED:
            name = f"{modality}_expert_indices"
            value = getattr(self, name)
            if value is None:
                continue
            experts = expert_indices(self, name, value)
            if not experts or max(experts) >= self.num_experts:
                raise ValueError(f"UniMoeConfig.{name} must list experts in [0, num_experts={self.num_experts}), "
                                 f"got {value!r}")
            out[MODALITY_IDS[modality]] = experts
        return out


__all__ = ["CLIP_VIT_L14_336", "UniMoeConfig", "WHISPER_SMALL"]
