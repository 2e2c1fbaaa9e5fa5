"""MomeConfig: Mixture of Matryoshka Experts for audio(-visual) speech recognition (arXiv 2510.04136).

Defaults are the paper's where it gives them: Llama 3.2-1B's dimensions for the LLM, Whisper-medium's
encoder (random init: no medium weights ship here; `{"kind": "whisper", "name": "tiny.en", "weights":
"packaged"}` is the real Whisper that does), MoME-23/4 (23 routed + 1 shared bottleneck-12 experts,
top-4, balance loss 0.01), ASR rates {4, 8, 12, 16, 20}, average pooling, AVSR video rates {2, 5} at
25 fps with 1024-d AV-HuBERT-Large features.
"""

import copy

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from zoo.core.validation import (
    check_bool,
    check_choice,
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    check_sub_configs,
    strict_config,
)
from zoo.core.dispatch import check_backend
from zoo.upcycling.ffn_adapters import ARCHITECTURES

from .mome_layer import PLACEMENTS

COMPRESSIONS = ("avg", "stack")  # average pooling, or stacking `rate` consecutive frames into one vector
# Llama 3.2-1B (meta-llama/Llama-3.2-1B config.json)
PAPER_LLM = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": 128000,
    "eos_token_id": 128001,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}
# Whisper-medium's encoder (openai/whisper-medium config.json), as a zoo.multimodal.audio_tower spec
PAPER_AUDIO_TOWER = {
    "kind": "whisper",
    "config": {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096,
               "decoder_layers": 24, "decoder_attention_heads": 16, "decoder_ffn_dim": 4096, "num_mel_bins": 80,
               "max_source_positions": 1500, "vocab_size": 51865},
}
PAPER_ASR_RATES = [4, 8, 12, 16, 20]
PAPER_VIDEO_RATES = [2, 5]


@strict_config
class MomeConfig(PreTrainedConfig):
    r"""
    Configuration of [`MomeForSpeechRecognition`]: a frozen LLM (`text_config`), a frozen Whisper
    encoder (`audio_tower`), one projector per compression rate, and MoME modules next to a sublayer
    of every chosen decoder layer.

    Args:
        text_config (`dict` or `PreTrainedConfig`): the frozen LLM (default: Llama 3.2-1B's dimensions).
        audio_tower (`dict`): spec of zoo.multimodal.audio_tower: {"kind": "whisper", "name": "tiny.en",
            "weights": "packaged"} (real weights) or {"kind": "whisper", "config": {...WhisperConfig fields...}}
            (random init; default: Whisper-medium's encoder, the paper's).
        audio_token_id (`int`): id of the processor's `<audio>` placeholder token.
        audio_compression_rates (`list[int]`, [4, 8, 12, 16, 20]): the Matryoshka rates the model is trained at.
        inference_compression_rate (`int`, *optional*): rate used when a call names none (first rate by default).
        compression (`str`, "avg"): "avg" (average pooling) or "stack" (concatenate `rate` frames).
        projector_hidden_size (`int`, *optional*): width of each per-rate projector's hidden layer
            (default: the LLM's hidden size).
        video_feature_size (`int`, *optional*): size of the video stream's features (AV-HuBERT-Large: 1024);
            None = audio only (ASR). With it, `video_token_id`, `video_compression_rates` ([2, 5]) and
            `inference_video_compression_rate` apply; the features come at `video_frames_per_second` (25).
        mome_placement (`str`, "attention"): the MoME module runs in parallel to "attention" (MoME-MHSA),
            "ffn" (MoME-FFN) or the whole decoder "layer" (MoME-LAYER); its output is added to that sublayer's.
        mome_layers (`str` or `list[int]`, "all"): "all" | "even" | "odd" | explicit decoder-layer indices.
        num_routed_experts (`int`, 23), num_shared_experts (`int`, 1), num_experts_per_tok (`int`, 4),
        bottleneck_size (`int`, 12): MoME-23/4's sizes.
        normalize_router_weights (`bool`, False): renormalise the top-k weights to sum to 1 (the paper writes
            g = TopK(softmax(W_r h)), i.e. raw probabilities).
        router_aux_loss_coef (`float`, 0.01): weight of the load-balancing loss (mean over the MoME layers).
        dispatch_backend (`str`, "auto"): zoo.core.dispatch backend of the routed experts.
        transcription_prompt_ids (`list[int]`, *optional*): the prompt `generate(input_features=...)` builds when no
            input_ids are given (the ASR pipeline's path): token ids with ONE `audio_token_id` where the audio
            goes (expanded to the right number of placeholders per sample). The processor writes it
            (`MomeProcessor.transcription_prompt_ids()`).
    """

    model_type = "mome"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=PAPER_LLM)}

    text_config: dict | PreTrainedConfig | None = None
    audio_tower: dict | None = None
    audio_token_id: int | None = None
    audio_compression_rates: list[int] | None = None
    inference_compression_rate: int | None = None
    compression: str = "avg"
    projector_hidden_size: int | None = None
    video_feature_size: int | None = None
    video_token_id: int | None = None
    video_compression_rates: list[int] | None = None
    inference_video_compression_rate: int | None = None
    video_frames_per_second: int = 25
    mome_placement: str = "attention"
    mome_layers: str | list[int] = "all"
    num_routed_experts: int = 23
    num_shared_experts: int = 1
    num_experts_per_tok: int = 4
    bottleneck_size: int = 12
    normalize_router_weights: bool = False
    router_aux_loss_coef: float = 0.01
    dispatch_backend: str = "auto"
    transcription_prompt_ids: list[int] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.audio_tower is None:
            self.audio_tower = copy.deepcopy(PAPER_AUDIO_TOWER)
        if self.audio_compression_rates is None:
            self.audio_compression_rates = list(PAPER_ASR_RATES)
        if self.video_feature_size is not None and self.video_compression_rates is None:
            self.video_compression_rates = list(PAPER_VIDEO_RATES)
        check_sub_configs(self)
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))

    def validate_architecture(self):
        """Every field, each error naming it (run after __init__ and before save_pretrained)."""
        owner = self
        if self.text_config.model_type not in ARCHITECTURES:
            raise ValueError(f"MomeConfig.text_config: architecture {self.text_config.model_type!r} is not supported; "
                             f"supported: {sorted(ARCHITECTURES)}")
        if not isinstance(self.audio_tower, dict) or self.audio_tower.get("kind") != "whisper":
            raise ValueError(f"MomeConfig.audio_tower must be a spec dict with kind 'whisper', got {self.audio_tower!r}")
        check_positive_int(owner, num_routed_experts=self.num_routed_experts, num_experts_per_tok=self.num_experts_per_tok,
                           bottleneck_size=self.bottleneck_size, video_frames_per_second=self.video_frames_per_second)
        check_non_negative_int(owner, num_shared_experts=self.num_shared_experts)
        for name in ("audio_token_id", "video_token_id"):  # placeholders are real vocabulary ids here
            if getattr(self, name) is not None:
                check_non_negative_int(owner, **{name: getattr(self, name)})
        check_positive_int(owner, allow_none=True, projector_hidden_size=self.projector_hidden_size,
                           video_feature_size=self.video_feature_size)
        if self.num_experts_per_tok > self.num_routed_experts:
            raise ValueError(f"MomeConfig.num_experts_per_tok ({self.num_experts_per_tok}) must be <= "
                             f"num_routed_experts ({self.num_routed_experts})")
        check_non_negative(owner, router_aux_loss_coef=self.router_aux_loss_coef)
        check_bool(owner, normalize_router_weights=self.normalize_router_weights)
        check_choice(owner, "mome_placement", self.mome_placement, PLACEMENTS)
        check_choice(owner, "compression", self.compression, COMPRESSIONS)
        check_backend(owner, self.dispatch_backend)
        self._check_rates("audio_compression_rates", self.audio_compression_rates, "inference_compression_rate",
                          self.inference_compression_rate)
        if self.video_feature_size is None:
            for name in ("video_token_id", "video_compression_rates", "inference_video_compression_rate"):
                if getattr(self, name) is not None:
                    raise ValueError(f"MomeConfig.{name} is set but video_feature_size is None (no video stream); "
                                     "set video_feature_size (AV-HuBERT-Large: 1024) to add one")
        else:
            self._check_rates("video_compression_rates", self.video_compression_rates,
                              "inference_video_compression_rate", self.inference_video_compression_rate)
        self.mome_layer_ids()  # validates mome_layers
        if self.transcription_prompt_ids is not None:
            ids = self.transcription_prompt_ids
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError(f"MomeConfig.transcription_prompt_ids must be a list of token ids, got {ids!r}")
            if self.audio_token_id is None or ids.count(self.audio_token_id) != 1:
                raise ValueError(f"MomeConfig.transcription_prompt_ids must hold audio_token_id ({self.audio_token_id}) "
                                 f"exactly once, got {ids}")

    def _check_rates(self, name: str, rates, default_name: str, default) -> None:
        if not isinstance(rates, list) or not rates:
            raise ValueError(f"MomeConfig.{name} must be a non-empty list of positive integers, got {rates!r}")
        for rate in rates:
            check_positive_int(self, **{name: rate})
        if len(set(rates)) != len(rates):
            raise ValueError(f"MomeConfig.{name} lists a rate twice: {rates}")
        if default is not None and default not in rates:
            raise ValueError(f"MomeConfig.{default_name} ({default}) is not one of {name} {rates}")

    # -- derived -------------------------------------------------------------------------------------
    def mome_layer_ids(self) -> list[int]:
        num_layers = self.text_config.num_hidden_layers
        named = {"all": range(num_layers), "odd": range(1, num_layers, 2), "even": range(0, num_layers, 2),
                 "none": range(0)}  # "none": projectors only (the per-rate LoRA baseline's model)
        if isinstance(self.mome_layers, str):
            if self.mome_layers not in named:
                raise ValueError(f"MomeConfig.mome_layers must be one of {sorted(named)} or a list of layer indices, "
                                 f"got {self.mome_layers!r}")
            return list(named[self.mome_layers])
        layers = sorted(set(self.mome_layers))
        bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < num_layers]
        if bad or not layers:
            raise ValueError(f"MomeConfig.mome_layers {self.mome_layers} must be indices of the {num_layers} decoder layers")
        return layers

    @property
    def default_audio_rate(self) -> int:
        return self.inference_compression_rate or self.audio_compression_rates[0]

    @property
    def default_video_rate(self) -> int | None:
        if self.video_feature_size is None:
            return None
        return self.inference_video_compression_rate or self.video_compression_rates[0]

    @property
    def num_hidden_layers(self) -> int:  # generate() reads it
        return self.text_config.num_hidden_layers


__all__ = ["MomeConfig"]
