"""MoME: Mixture of Matryoshka Experts for audio(-visual) speech recognition (arXiv 2510.04136).

    audio 16 kHz --processor--> input_features [n, 80, 3000] (one row per 30 s chunk), feature_lengths [n]
        --Whisper encoder (frozen)-->            [n, T_a, C] at 50 Hz, lengths          (zoo.multimodal.audio_tower)
        --Matryoshka compression at rate a-->    avg-pool / stack a frames                  (zoo.multimodal.matryoshka)
        --projector_a (one per rate)-->          audio tokens [n, ceil(T_a / a), D]
    (video: AV-HuBERT features [B, T_v, 1024] at 25 fps --compression at rate v + projector_v--> video tokens)
    input_ids with <audio> (and <video>) placeholders --embed + splice_features--> inputs_embeds [B, L, D],
        modality ids [B, L] (text 0, audio 2, video 3)
    frozen LLM; in every chosen decoder layer a MoME module in parallel to MHSA / FFN / the whole layer:
        out = sublayer(h) + sum_shared E_n(h) + sum_{top-k} g_n E_n(h),   E(h) = W_up GELU(W_down h)
        ONE router and ONE expert set per layer, shared by the sequences of every compression rate
    loss = CE(transcript tokens) + 0.01 * mean over MoME layers of the load-balancing loss

Trainable: the per-rate projectors and the MoME modules (routers, experts). The LLM and the encoders
are frozen. W_up = 0, so at step 0 the model is the frozen LLM reading the projected audio.

A recipe averages the LM loss over rates by calling forward once per rate (the same input_ids are
valid for one rate only: the number of placeholders depends on it, so the processor builds one
sequence per rate):

    for rate in config.audio_compression_rates:
        batch = processor(audio=..., text=..., compression_rate=rate)
        loss = loss + model(**batch, compression_rate=rate).loss / len(rates)

The routing results of a call stay in the model's RoutingContext (per thread / asyncio task):
`model.routing_histograms(out.modality_ids, "audio")` -> [MoME layers, N_r] expert counts of that call,
so a recipe reads one histogram per rate; `output_router_logits=True` returns each layer's logits.

Checkpoints: save_pretrained writes every weight, the frozen LLM and Whisper encoder included, and
from_pretrained reads them all back (built on the meta device, nothing is rebuilt from the config's
tower name or re-initialised): a folder is self-contained, at the cost of storing the frozen bases.

Departures from the paper, and why
- No MoME code was released; the module follows the paper's text as summarised in
  shared/reference/models_b.md §2: the MoME module reads the input of the sublayer it parallels
  (the normalised hidden states for MHSA / FFN, the layer input for "layer").
- Top-k weights are the raw softmax probabilities (g = TopK(softmax(W_r h))); renormalising is a
  config flag (`normalize_router_weights`), since the paper does not say.
- The load-balancing loss is averaged over the MoME layers (transformers' Mixtral convention) and
  taken over all real tokens (text and audio alike: the modules run on every token).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from zoo.core.context import RoutingContext
from zoo.core.modalities import MODALITY_IDS
from zoo.core.routing import Router, RoutingResult
from zoo.experts.bottleneck import BottleneckExperts
from zoo.integrations.checkpoint_keys import StrictMoeLoading
from zoo.integrations.lora_targets import LoraTargets, language_model_attention
from zoo.multimodal.audio_tower import build_audio_tower
from zoo.multimodal.causal import keep_causal
from zoo.multimodal.matryoshka import MatryoshkaCompressor, compressed_lengths
from zoo.multimodal.processing import splice_features
from zoo.multimodal.speech_processing import gather_audio_frames

from .configuration_mome import MomeConfig
from .mome_layer import MatryoshkaExperts, MomeParallel, attach_mome


@dataclass
class MomeOutput(ModelOutput):
    """loss = lm_loss + aux_loss (with labels); logits over the supervised positions only when labels are given
    (the vocabulary head dominates the cost otherwise), else [B, S or logits_to_keep, V]."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    lm_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None  # per MoME layer [B*S, N_r]
    modality_ids: torch.Tensor | None = None  # [B, S] zoo MODALITY_IDS
    compression_rate: int | None = None


class MomePreTrainedModel(StrictMoeLoading, PreTrainedModel):
    config_class = MomeConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MomeParallel"]
    _supports_sdpa = True
    _can_compile_fullgraph = False  # routing has data-dependent shapes

    def _init_weights(self, module):
        # the MoME modules initialise themselves (W_up = 0 keeps the frozen LLM's function at step 0)
        if isinstance(module, (MatryoshkaExperts, BottleneckExperts, Router)):
            return
        super()._init_weights(module)


class MomeForSpeechRecognition(MomePreTrainedModel, GenerationMixin):
    """See the module docstring. `MomeForSpeechRecognition(config, language_model=llm)` builds around a loaded
    causal LM (its decoder layers get MoME modules in place); without one the LLM is built from
    `config.text_config`. `load_tower_weights=False` skips the packaged Whisper weights (meta builds,
    from_pretrained, which reads every weight from the checkpoint)."""

    # zoo.lora.lora_config: LoRA on the LLM's attention; the MoME modules and projectors are new: trained fully
    lora_targets = LoraTargets(attention=language_model_attention(), modules_to_save=("mome", "audio_projectors"))

    def __init__(self, config: MomeConfig, language_model: PreTrainedModel | None = None,
                 load_tower_weights: bool = True):
        super().__init__(config)
        self.audio_tower = build_audio_tower(config.audio_tower, load_weights=load_tower_weights)  # frozen, eval
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        elif language_model.config.hidden_size != config.text_config.hidden_size:
            raise ValueError(f"language_model has hidden_size {language_model.config.hidden_size} but "
                             f"config.text_config says {config.text_config.hidden_size}")
        self.language_model = language_model
        self.config.text_config = language_model.config  # one config object (resize_token_embeddings updates both)
        keep_causal(language_model, self.config)  # MomeConfig(text_config=llm.config) cleared it
        self.language_model.requires_grad_(False)
        hidden = config.text_config.hidden_size
        self.audio_projectors = MatryoshkaCompressor(
            rates=config.audio_compression_rates, mode=config.compression, in_features=self.audio_tower.hidden_size,
            out_features=hidden, intermediate_size=config.projector_hidden_size)
        self.video_projectors = None
        if config.video_feature_size is not None:
            self.video_projectors = MatryoshkaCompressor(
                rates=config.video_compression_rates, mode=config.compression, in_features=config.video_feature_size,
                out_features=hidden, intermediate_size=config.projector_hidden_size)
        self.routing_context = RoutingContext()
        self.mome_modules = attach_mome(
            self.language_model, config.mome_placement, config.mome_layer_ids(), self.routing_context,
            num_routed_experts=config.num_routed_experts, num_shared_experts=config.num_shared_experts,
            num_experts_per_tok=config.num_experts_per_tok, bottleneck_size=config.bottleneck_size,
            normalize=config.normalize_router_weights, dispatch_backend=config.dispatch_backend)
        self._no_split_modules = ["MomeParallel", *(getattr(language_model, "_no_split_modules", None) or [])]
        if not next(self.audio_tower.parameters()).is_meta:
            # post_init() re-initialises every module not flagged as initialised (convs -> N(0, 0.02)); the tower's
            # packaged (or its own random) weights must survive it. Not on the meta device (from_pretrained): there
            # the checkpoint fills every weight, and the non-persistent buffers must still be initialised.
            for module in self.audio_tower.modules():
                module._is_hf_initialized = True
        self.post_init()
        placeholders = [i for i in (config.audio_token_id, config.video_token_id) if i is not None]
        if placeholders and self.generation_config is not None:
            # a placeholder is not text: generating one would ask the next step for features it cannot have
            self.generation_config.suppress_tokens = sorted(set(self.generation_config.suppress_tokens or []) | set(placeholders))

    # -- pieces ------------------------------------------------------------------------------------
    def decoder(self) -> nn.Module:
        """The LLM's decoder stack (its `.model`), also when a PEFT wrapper holds the LLM (the per-rate LoRA baseline)."""
        lm = self.language_model
        return (lm.get_base_model() if hasattr(lm, "get_base_model") else lm).model

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def train(self, mode: bool = True):
        super().train(mode)
        self.audio_tower.eval()  # frozen
        return self

    def mome_routers(self) -> list[Router]:
        """The router of each MoME layer, in layer order (one per layer, shared by every rate)."""
        return [m.mome.router for m in self.mome_modules]

    def last_routings(self) -> list[RoutingResult | None]:
        """This thread's latest RoutingResult of each MoME layer (zoo.core.context)."""
        return [m.last_routing for m in self.mome_modules]

    def routing_histograms(self, modality_ids: torch.Tensor | None = None, modality: str | None = None) -> torch.Tensor:
        """[num MoME layers, N_r] expert counts (token-slots) of this thread's latest forward over its real tokens
        (padding, from the call's attention mask, left out), or with `modality_ids` (the output's) and `modality`
        ("text", "audio", "video") over that modality's tokens only."""
        padding_mask = self.routing_context.current().padding_mask  # the latest call's, still set in this thread
        rows = []
        for routing in self.last_routings():
            if routing is None:
                raise ValueError("no forward has run in this thread yet: call the model, then read the histograms")
            keep = torch.ones(routing.num_tokens, dtype=torch.bool, device=routing.mask.device)
            if padding_mask is not None and padding_mask.numel() == routing.num_tokens:
                keep &= padding_mask.reshape(-1).to(keep.device)
            if modality is not None:
                if modality_ids is None:
                    raise ValueError("routing_histograms(modality=...) needs the forward's modality_ids")
                if modality_ids.numel() != routing.num_tokens:
                    raise ValueError(f"modality_ids cover {modality_ids.numel()} tokens but the last forward routed "
                                     f"{routing.num_tokens}")
                keep &= (modality_ids.reshape(-1) == MODALITY_IDS[modality]).to(keep.device)
            used = routing.mask & keep[:, None]
            rows.append(torch.bincount(routing.indices[used], minlength=routing.num_experts))
        return torch.stack(rows)

    # -- encoders ----------------------------------------------------------------------------------
    def resolve_rate(self, rate, video: bool = False) -> int:
        """The rate a call asked for (None: the config's inference rate), checked against the model's rates."""
        config = self.config
        name, rates = ("video_compression_rate", config.video_compression_rates) if video else \
            ("compression_rate", config.audio_compression_rates)
        if rate is None:
            rate = config.default_video_rate if video else config.default_audio_rate
        if isinstance(rate, torch.Tensor):
            rate = int(rate)
        if rate not in (rates or []):
            raise ValueError(f"{name}={rate!r} is not one of the model's rates {rates} "
                             f"(config.{'video' if video else 'audio'}_compression_rates)")
        return rate

    def audio_features(self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None, rate: int):
        """[B, 80, F] mel frames -> (audio tokens [B, N, D], lengths [B]) at compression `rate`."""
        with torch.no_grad():
            frames, lengths = self.audio_tower(input_features, feature_lengths)  # [B, T, C] at 50 Hz
        return self.audio_projectors(frames, lengths, rate)  # the projector casts to its dtype

    def video_features(self, video_features: torch.Tensor, video_lengths: torch.Tensor | None, rate: int):
        """AV-HuBERT features [B, T_v, 1024] at 25 fps -> (video tokens [B, N_v, D], lengths [B])."""
        if self.video_projectors is None:
            raise ValueError("video_features given, but this model has no video stream (config.video_feature_size is None)")
        if video_features.dim() != 3 or video_features.shape[-1] != self.config.video_feature_size:
            raise ValueError(f"video_features must be [batch, frames, {self.config.video_feature_size}], "
                             f"got {tuple(video_features.shape)}")
        if video_lengths is None:
            video_lengths = torch.full(video_features.shape[:1], video_features.shape[1], dtype=torch.long,
                                       device=video_features.device)
        return self.video_projectors(video_features, video_lengths.long(), rate)

    def num_audio_tokens(self, feature_lengths: torch.Tensor, compression_rate: int | None = None) -> torch.Tensor:
        """[B] placeholders each clip of `feature_lengths` mel frames needs at `compression_rate`."""
        rate = self.resolve_rate(compression_rate)
        return compressed_lengths(self.audio_tower.output_lengths(feature_lengths), rate)

    # -- splice --------------------------------------------------------------------------------------
    def embed(self, input_ids, input_features=None, feature_lengths=None, compression_rate=None,
              video_features=None, video_lengths=None, video_compression_rate=None, chunks_per_audio=None,
              audio_frames=None, audio_frame_lengths=None):
        """-> inputs_embeds [B, L, D], modality_ids [B, L] (text 0, audio 2, video 3).

        input_features are the processor's rows: one per 30 s chunk of each clip, in reading order
        ([n_chunks, 80, F], feature_lengths [n_chunks]); each chunk's real audio tokens fill the next
        `<audio>` placeholders (zoo.multimodal.processing.splice_features)."""
        config = self.config
        if config.audio_token_id is None:
            raise ValueError("config.audio_token_id is not set (the processor's <audio> token id)")
        placeholders = input_ids == config.audio_token_id
        if config.video_token_id is not None:
            placeholders = placeholders | (input_ids == config.video_token_id)
        embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholders, 0))  # [B, L, D]
        audio = None
        if audio_frames is not None:  # the frozen tower's output, computed once (a training cache)
            if input_features is not None:
                raise ValueError("pass input_features (mel frames) or audio_frames (the tower's output), not both")
            if audio_frames.dim() != 3 or audio_frames.shape[-1] != self.audio_tower.hidden_size:
                raise ValueError(f"audio_frames must be [chunks, frames, {self.audio_tower.hidden_size}] (the audio "
                                 f"tower's output), got {tuple(audio_frames.shape)}")
            if audio_frame_lengths is None:
                raise ValueError("audio_frames needs audio_frame_lengths ([chunks] real frames of each row)")
            rate = self.resolve_rate(compression_rate)
            audio = gather_audio_frames(*self.audio_projectors(audio_frames, audio_frame_lengths.long(), rate))
        elif input_features is not None:
            if chunks_per_audio is not None and int(chunks_per_audio.sum()) != input_features.shape[0]:
                raise ValueError(f"chunks_per_audio sums to {int(chunks_per_audio.sum())} chunks but input_features "
                                 f"has {input_features.shape[0]} rows")
            rate = self.resolve_rate(compression_rate)
            audio = gather_audio_frames(*self.audio_features(input_features, feature_lengths, rate))  # [P, D]
        embeds, modality_ids = splice_features(input_ids, embeds, audio, config.audio_token_id, "audio")
        if video_features is not None:
            if config.video_token_id is None:
                raise ValueError("video_features given, but config.video_token_id is not set (the <video> token id)")
            rate = self.resolve_rate(video_compression_rate, video=True)
            video = gather_audio_frames(*self.video_features(video_features, video_lengths, rate))  # [P_v, D]
            embeds, modality_ids = splice_features(input_ids, embeds, video, config.video_token_id, "video", modality_ids)
        elif config.video_token_id is not None:
            embeds, modality_ids = splice_features(input_ids, embeds, None, config.video_token_id, "video", modality_ids)
        return embeds, modality_ids

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, input_features=None, feature_lengths=None,
                compression_rate: int | None = None, labels=None, video_features=None, video_lengths=None,
                video_compression_rate: int | None = None, chunks_per_audio=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, use_cache: bool | None = None,
                output_router_logits: bool = False, logits_to_keep: int = 0, modality_ids=None,
                audio_frames=None, audio_frame_lengths=None, **kwargs) -> MomeOutput:
        """One forward at one compression rate.

        Args:
            input_ids [B, S]: text with `<audio>` placeholders (and `<video>` ones), as the processor builds it
                for `compression_rate`.
            input_features [n_chunks, 80, F], feature_lengths [n_chunks], chunks_per_audio [n_clips]: the
                processor's audio rows (one per 30 s chunk) and their mel frames.
            compression_rate: one of config.audio_compression_rates (None: config.default_audio_rate).
            video_features [B, T_v, video_feature_size], video_lengths [B], video_compression_rate: the video stream.
            labels [B, S]: next-token targets (-100 = not supervised); loss = CE + aux_loss.
        Audio and video are spliced on the prefill only: a cached decoding step feeds text tokens and no features."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with input_features for the <audio> placeholders) or inputs_embeds")
            inputs_embeds, modality_ids = self.embed(input_ids, input_features, feature_lengths, compression_rate,
                                                     video_features, video_lengths, video_compression_rate,
                                                     chunks_per_audio, audio_frames, audio_frame_lengths)
        elif input_features is not None or video_features is not None:
            raise ValueError("pass input_ids with input_features / video_features (they are spliced at the "
                             "placeholders), not inputs_embeds")
        elif modality_ids is None:
            modality_ids = torch.full(inputs_embeds.shape[:2], MODALITY_IDS["text"], dtype=torch.long,
                                      device=inputs_embeds.device)
        if use_cache is None and labels is not None:
            use_cache = False  # a training / scoring forward keeps no KV cache
        padding_mask = None
        if attention_mask is not None and attention_mask.dim() == 2:
            padding_mask = attention_mask[:, -inputs_embeds.shape[1]:].bool()  # the current tokens' columns
        # stays set after the forward: activation checkpointing recomputes the layers with the same inputs
        self.routing_context.set(modality_ids, None, padding_mask)
        outputs = self.decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            position_ids=position_ids, past_key_values=past_key_values,
                                            use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state  # [B, S, D]
        routings = self.last_routings()
        aux_loss = hidden.new_zeros((), dtype=torch.float32)
        if routings:
            balance = torch.stack([r.aux_losses["load_balance"] for r in routings]).mean()
            aux_loss = self.config.router_aux_loss_coef * balance
        lm_head = self.get_output_embeddings()
        loss = lm_loss = None
        if labels is not None:
            targets = labels[:, 1:]
            keep = targets != -100  # [B, S-1]
            if not keep.any():
                raise ValueError("labels supervise no token (all -100)")
            logits = lm_head(hidden[:, :-1][keep]).float()  # [n_supervised, V]
            lm_loss = F.cross_entropy(logits, targets[keep])
            loss = lm_loss + aux_loss
        else:
            logits = lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        return MomeOutput(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, lm_loss=lm_loss, aux_loss=aux_loss,
            router_logits=tuple(r.logits for r in routings) if output_router_logits else None,
            modality_ids=modality_ids,
            compression_rate=self.resolve_rate(compression_rate) if input_features is not None else None,
        )

    # -- generation --------------------------------------------------------------------------------
    # inputs the cached decoding steps must not see again (transformers itself drops input_features)
    _PREFILL_ONLY = ("feature_lengths", "chunks_per_audio", "video_features", "video_lengths", "audio_frames",
                     "audio_frame_lengths")

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None,
                                      is_first_iteration: bool | None = False, **kwargs):
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in self._PREFILL_ONLY:  # the cache holds the spliced prompt
                kwargs.pop(name, None)
        return super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                     attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                                     is_first_iteration=is_first_iteration, **kwargs)

    def transcription_prompt(self, feature_lengths: torch.Tensor, compression_rate: int | None = None):
        """The ASR prompt of each clip (config.transcription_prompt_ids, its one <audio> expanded to the clip's
        number of audio tokens), left-padded -> (input_ids [B, L], attention_mask [B, L])."""
        config = self.config
        if config.transcription_prompt_ids is None:
            raise ValueError("generate() without input_ids needs config.transcription_prompt_ids (the processor's "
                             "transcription_prompt_ids(); set it before saving the model for the ASR pipeline)")
        counts = self.num_audio_tokens(feature_lengths, compression_rate).tolist()
        template = list(config.transcription_prompt_ids)
        at = template.index(config.audio_token_id)
        rows = [template[:at] + [config.audio_token_id] * n + template[at + 1:] for n in counts]
        width = max(len(r) for r in rows)
        pad = config.text_config.pad_token_id
        pad = pad if pad is not None else (config.text_config.eos_token_id or 0)
        pad = pad[0] if isinstance(pad, list) else pad
        device = feature_lengths.device
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        return input_ids, attention_mask

    def generate(self, input_ids=None, input_features=None, attention_mask=None, feature_lengths=None, **kwargs):
        """KV-cached generation (GenerationMixin): audio (and video) are spliced on the prefill only.

        With input_ids: a prompt built by the processor; returns prompt + new tokens (decoder-only convention).
        Without input_ids: the transcription prompt is built from config.transcription_prompt_ids for each
        clip and only the new tokens are returned (what transformers' ASR pipeline decodes). That pipeline
        hands the audio over as the model's main input (`input_ids=input_features [B, 80, F]`) with the feature
        extractor's frame mask as `attention_mask`: a floating-point `input_ids` is read that way."""
        if input_ids is not None and input_ids.is_floating_point():
            if input_features is not None:
                raise ValueError("generate() got floating-point input_ids and input_features: pass token ids as input_ids")
            input_features, input_ids = input_ids, None
            if attention_mask is not None and feature_lengths is None:
                feature_lengths = attention_mask.sum(dim=-1).long()  # the frame mask of WhisperFeatureExtractor
            attention_mask = None
        if input_ids is not None:
            return super().generate(input_ids=input_ids, input_features=input_features, attention_mask=attention_mask,
                                    feature_lengths=feature_lengths, **kwargs)
        if input_features is None:
            raise ValueError("generate() needs input_ids (a prompt from the processor) or input_features (audio)")
        if feature_lengths is None:
            feature_lengths = torch.full(input_features.shape[:1], input_features.shape[-1], dtype=torch.long,
                                         device=input_features.device)
        feature_lengths = torch.as_tensor(feature_lengths, device=input_features.device).long()
        prompt, prompt_mask = self.transcription_prompt(feature_lengths, kwargs.get("compression_rate"))
        out = super().generate(input_ids=prompt, attention_mask=prompt_mask, input_features=input_features,
                               feature_lengths=feature_lengths, **kwargs)
        if isinstance(out, torch.Tensor):
            return out[:, prompt.shape[1]:]
        out.sequences = out.sequences[:, prompt.shape[1]:]
        return out


__all__ = ["MomeForSpeechRecognition", "MomeOutput", "MomePreTrainedModel"]
