"""Uni-MoE: a unified multimodal LLM whose FFNs are LoRA experts from different dense sources (arXiv 2405.11273).

    image   pixel_values [n_img, 3, S, S] --CLIP (frozen)--> [n_img, N, C] --mlp2x_gelu--> [n_img, N, D]
    video   pixel_values_videos [n_vid, F, 3, S, S] --the same tower + projector per frame--> [n_vid * F, N, D]
            --mean over the F frames--> [n_vid, N, D]                                        (zoo.multimodal.video)
    speech  input_features [n_chunks, 80, 3000] (30 s chunks) --Whisper encoder (frozen)--> [n_chunks, 1500, C_a]
            --Q-Former: Whisper decoder over Q learnable queries + Linear--> [n_chunks, Q, D] (zoo.multimodal.qformer)
    input_ids with <image>/<video>/<audio> placeholders --embed + splice_features--> inputs_embeds [B, L, D],
        modality_ids [B, L] (text 0, image 1, audio 2, video 3)
    every chosen decoder FFN -> MoE layer: router W_g (trained), top-2 of E experts, weights renormalised,
        dropless; expert e = frozen FFN of source e + its own LoRA (r 8, alpha 16)           (zoo.experts.lora)
    loss = CE + sum over MoE layers of  a_bal * GShard(top-1)  +  a_l1 * modality L1  +  a_kl * modality KL
           (zoo.core.losses; each coefficient is a config field, each term is reported in the output)

`UniMoeForConditionalGeneration(config, language_model=llm)` builds around a loaded dense causal LM
(its FFNs become the experts' frozen weights; every expert the same source, so with LoRA B = 0 the
model is the dense LLM at step 0). With `config.expert_sources` each expert slot has its own frozen
FFN, filled from the named dense models by `load_expert_sources({name: llm, ...})` or by the
converter (models.unimoe.convert_unimoe). `generate()` is KV-cached: the media are spliced on the
prefill only (transformers drops pixel_values, pixel_values_videos and input_features afterwards).

Departures from the released code, and why
- One class for both releases: v1 (4E, plain top-2, no auxiliary loss) and 8e (DeepSpeed top-2 with a
  Gumbel-sampled 2nd expert, balance / modality L1 / KL losses) differ in config fields only.
- The Gumbel 2nd choice is sampled in training only; DeepSpeed 0.14 also samples it at eval, which makes
  inference stochastic. Eval takes the clean top-2.
- The modality L1 and KL losses are averaged over the sequences of a batch (the release sums over them,
  so its coefficient depended on the batch size) and count real tokens only (the release divides by
  the padded length). The KL term is the plain KL(mean gate A || mean gate B) over every pair of
  modalities present; the release re-applies softmax to the mean gates, divides by E
  (KLDivLoss "batchmean" on a 1-D tensor), takes the reverse direction and skips the image-video pair.
- The GShard balance loss counts top-1 choices, as DeepSpeed's gate and v1's (unused) l_aux do.
- 8e's experts carry separate LoRA pairs for gate_proj and up_proj; here gate and up share one pair over
  the fused [gate; up] projection. Converted checkpoints merge the released deltas into each expert's
  frozen FFN (exact), and the zoo's deltas start at B = 0.
- The Q-Former drops the Whisper decoder's token-embedding table, which the queries never use.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from zoo.core.losses import load_balancing_loss, modality_expert_l1_loss, modality_kl_separation_loss
from zoo.core.routing import RoutingResult
from zoo.experts.lora import LoRAExperts
from zoo.multimodal.audio_tower import build_audio_tower
from zoo.multimodal.modeling import MultimodalMoeForConditionalGeneration, MultimodalMoeOutput
from zoo.multimodal.processing import splice_features
from zoo.multimodal.qformer import build_whisper_qformer
from zoo.multimodal.video import flatten_video_pixels, mean_pool_frames
from zoo.upcycling.ffn_adapters import adapter_for
from zoo.upcycling.plan import UpcyclePlan

from .configuration_unimoe import UniMoeConfig

LOSS_NAMES = ("balance", "modality_l1", "modality_kl")


@dataclass
class UniMoeOutput(MultimodalMoeOutput):
    """loss = lm_loss + aux_loss; aux_loss = the weighted sum of the three router losses below, each summed
    over the MoE layers before its coefficient is applied (all are reported, also at coefficient 0)."""

    lm_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    modality_l1_loss: torch.Tensor | None = None
    modality_kl_loss: torch.Tensor | None = None


class UniMoeForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    """See the module docstring. `load_tower_weights=False` skips packaged tower weights (meta builds)."""

    config_class = UniMoeConfig
    _no_split_modules = ["UpcycledFFN", "WhisperEncoderLayer", "WhisperDecoderLayer"]
    # PEFT LoRA on the LLM's attention only (the 8e recipe), not on the CLIP / Whisper attention of the towers and
    # the Q-Former: zoo.lora.lora_config(model, "attention", exclude_modules=UniMoeForConditionalGeneration.peft_exclude_modules).
    # get_peft_model then freezes everything but its adapter and the routers; the experts' own LoRA pairs are model
    # weights (train them with `expert_lora_parameters()`, save the merged model with save_pretrained).
    peft_exclude_modules = r".*(vision_tower|audio_tower|audio_aligner)\..*"

    def __init__(self, config: UniMoeConfig, language_model=None, load_tower_weights: bool = True):
        super().__init__(config, language_model, load_tower_weights)
        self.audio_tower = build_audio_tower(config.audio_tower, load_weights=load_tower_weights)  # frozen, eval
        self.audio_aligner = build_whisper_qformer(config.audio_tower, config.num_audio_query_tokens,
                                                   config.text_config.hidden_size, load_weights=load_tower_weights)
        device = self.get_input_embeddings().weight.device
        self.audio_tower.to(device)
        self.audio_aligner.to(device)
        # The base's post_init() ran before these existed; this one initialises only what is new. Built for real,
        # the towers and the Whisper decoder are initialised already (random, or packaged weights that must survive).
        # On the meta device (from_pretrained) they are not: the checkpoint fills their weights, and their
        # non-persistent buffers (CLIP's position_ids) must still be initialised, so they stay unflagged.
        on_meta = self.get_input_embeddings().weight.is_meta
        for module in [*self.vision_tower.modules(), *self.audio_tower.modules(), *self.audio_aligner.decoder.modules()]:
            if on_meta:
                module.__dict__.pop("_is_hf_initialized", None)
            else:
                module._is_hf_initialized = True
        self.post_init()
        placeholders = [i for i in (config.image_token_id, config.video_token_id, config.audio_token_id)
                        if i is not None and i >= 0]
        if placeholders and self.generation_config is not None:
            # a placeholder is not text: generating one would ask the next step for features it cannot have
            self.generation_config.suppress_tokens = sorted(set(self.generation_config.suppress_tokens or []) | set(placeholders))

    # -- the MoE layers ----------------------------------------------------------------------------
    def upcycle_plan(self) -> UpcyclePlan:
        config = self.config
        fields = dict(num_experts=config.num_experts, num_experts_per_tok=config.num_experts_per_tok, normalize=True,
                      gumbel_second=config.router_gumbel_second, capacity_factor=config.capacity_factor,
                      layers=self.moe_layer_ids, router_aux_loss_coef=config.router_aux_loss_coef)
        if config.expert_lora_rank is not None:
            fields.update(expert_kind="lora", expert_options={
                "rank": config.expert_lora_rank, "alpha": config.expert_lora_alpha,
                "per_expert_base": config.expert_sources is not None})
        return UpcyclePlan(**fields)

    def router_losses(self, routing: RoutingResult) -> dict[str, torch.Tensor]:
        """One MoE layer's balance / modality L1 / modality KL losses (unweighted), over this call's tokens."""
        inputs = self.routing_context.current()
        modality_ids, padding_mask = inputs.modality_ids, inputs.padding_mask  # [B, S] each (set by forward)
        probs = torch.softmax(routing.logits.float(), dim=-1)  # [T, E]
        flat_padding = None if padding_mask is None else padding_mask.reshape(-1)
        by_sequence = probs.view(*modality_ids.shape, -1)  # [B, S, E]
        return {
            # GShard: E * sum_e f_e P_e with f counting top-1 choices = E^2 * mean_e(me_e * ce_e)
            "balance": load_balancing_loss(probs, routing.indices[:, :1], routing.mask[:, :1], flat_padding),
            "modality_l1": modality_expert_l1_loss(by_sequence, modality_ids, self.config.designated_experts(),
                                                   padding_mask),
            "modality_kl": modality_kl_separation_loss(by_sequence, modality_ids, padding_mask),
        }

    def router_aux_loss(self, routing: RoutingResult) -> torch.Tensor:
        config = self.config
        losses = self.router_losses(routing)
        return (config.router_aux_loss_coef * losses["balance"] + config.modality_l1_loss_coef * losses["modality_l1"]
                + config.modality_kl_loss_coef * losses["modality_kl"])

    def expert_lora_parameters(self) -> list[nn.Parameter]:
        """The experts' LoRA A / B of every MoE layer (what Uni-MoE trains inside the MoE, with the routers)."""
        return [p for ffn in self.moe_feed_forwards() for n, p in ffn.moe.experts.named_parameters() if "_lora_" in n]

    @torch.no_grad()
    def load_expert_sources(self, sources: Mapping[str, nn.Module]) -> None:
        """Fill each expert's frozen FFN from its dense source (config.expert_sources names one per slot):
        `sources` maps each name to a dense causal LM of the text_config's architecture, whose FFN of
        layer i becomes the frozen weights of that slot in MoE layer i."""
        names = self.config.expert_sources
        if names is None:
            raise ValueError("load_expert_sources needs config.expert_sources (the source of each expert slot); "
                             "without it all experts share the language model's own FFN")
        missing = sorted(set(names) - set(sources))
        if missing:
            raise ValueError(f"sources {missing} named in config.expert_sources were not given; given: {sorted(sources)}")
        readers = {}
        for name in set(names):
            model = sources[name]
            adapter = adapter_for(model.config)
            readers[name] = (model.config, adapter, adapter.decoder_layers(model))
        for layer, ffn in zip(self.moe_layer_ids, self.moe_feed_forwards()):
            bank = ffn.moe.experts
            for expert, name in enumerate(names):
                config, adapter, layers = readers[name]
                weights = adapter.read(getattr(layers[layer], adapter.ffn_attribute), config, layer)
                if isinstance(bank, LoRAExperts):
                    bank.load_expert_ffn(expert, weights)
                else:  # full GLU experts (expert_lora_rank=None): the same stacked layout
                    bank.gate_up_proj[expert].copy_(torch.cat([weights.gate, weights.up], dim=0))
                    bank.down_proj[expert].copy_(weights.down)

    # -- encoders ----------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.audio_tower.eval()  # frozen
        return self

    def video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """[n, F, 3, S, S] -> [n, N, D]: every frame through the image tower + projector, mean over frames."""
        frames, per_video = flatten_video_pixels(pixel_values_videos, self.config.max_video_frames)
        return mean_pool_frames(self.image_features(frames), per_video)

    def audio_features(self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[n_chunks, 80, F] mel frames -> [n_chunks, Q, D]: frozen Whisper encoder, then the Q-Former."""
        with torch.no_grad():
            frames, lengths = self.audio_tower(input_features, feature_lengths)  # [n, T, C]
        return self.audio_aligner(frames, lengths)

    def embed(self, input_ids, pixel_values=None, pixel_values_videos=None, input_features=None, feature_lengths=None,
              chunks_per_audio=None):
        """-> inputs_embeds [B, L, D], modality_ids [B, L]. Each modality's features fill its placeholders in
        reading order (zoo.multimodal.processing.splice_features); the counts must match exactly."""
        config = self.config
        token_ids = {"image": config.image_token_id, "video": config.video_token_id, "audio": config.audio_token_id}
        is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in token_ids.values():
            if token_id is not None:
                is_placeholder |= input_ids == token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(is_placeholder, 0))  # [B, L, D]

        def present(tensor):
            return tensor is not None and tensor.shape[0] > 0

        if present(input_features) and chunks_per_audio is not None and int(chunks_per_audio.sum()) != input_features.shape[0]:
            raise ValueError(f"chunks_per_audio sums to {int(chunks_per_audio.sum())} chunks but input_features has "
                             f"{input_features.shape[0]} rows")
        features = {
            "image": self.image_features(pixel_values) if present(pixel_values) else None,
            "video": self.video_features(pixel_values_videos) if present(pixel_values_videos) else None,
            "audio": self.audio_features(input_features, feature_lengths) if present(input_features) else None,
        }
        modality_ids = None
        for modality, token_id in token_ids.items():
            if token_id is None:
                if features[modality] is not None:
                    raise ValueError(f"{modality} inputs given, but config.{modality}_token_id is not set "
                                     f"(the processor's <{modality}> token id)")
                continue
            embeds, modality_ids = splice_features(input_ids, embeds, features[modality], token_id, modality, modality_ids)
        if modality_ids is None:
            modality_ids = torch.zeros_like(input_ids)  # text only
        return embeds, modality_ids

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, input_ids=None, pixel_values=None, pixel_values_videos=None, input_features=None,
                feature_lengths=None, chunks_per_audio=None, attention_mask=None, inputs_embeds=None, modality_ids=None,
                labels=None, **kwargs) -> UniMoeOutput:
        """input_ids [B, S] with placeholders; pixel_values [n_img, 3, S, S]; pixel_values_videos [n_vid, F, 3, S, S];
        input_features [n_chunks, 80, 3000] + feature_lengths [n_chunks] (+ chunks_per_audio [n_clips]), as
        UniMoeProcessor builds them. labels [B, S]: next-token targets (-100 = not supervised)."""
        media = (pixel_values, pixel_values_videos, input_features)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with the media for their placeholders) or inputs_embeds")
            inputs_embeds, modality_ids = self.embed(input_ids, pixel_values, pixel_values_videos, input_features,
                                                     feature_lengths, chunks_per_audio)
        elif any(m is not None and m.shape[0] > 0 for m in media):
            raise ValueError("pass input_ids with pixel_values / pixel_values_videos / input_features (they are "
                             "spliced at the placeholders), not inputs_embeds")
        out = super().forward(inputs_embeds=inputs_embeds, modality_ids=modality_ids, attention_mask=attention_mask,
                              labels=labels, **kwargs)
        layers = [self.router_losses(ffn.last_routing) for ffn in self.moe_feed_forwards()]
        totals = {name: sum((l[name] for l in layers), out.aux_loss.new_zeros(())) for name in LOSS_NAMES}
        return UniMoeOutput(
            **out, lm_loss=None if out.loss is None else out.loss - out.aux_loss,
            balance_loss=totals["balance"], modality_l1_loss=totals["modality_l1"], modality_kl_loss=totals["modality_kl"],
        )


__all__ = ["UniMoeForConditionalGeneration", "UniMoeOutput"]
