"""A Q-Former connector built from a Whisper decoder (Uni-MoE's speech connector).

    encoder frames [n_chunks, T, C] (WhisperAudioTower: one row per 30 s chunk)
    queries        [1, Q, C] learnable (Uni-MoE: 50 per chunk), the same for every chunk
        --Whisper decoder: (+ its positions) causal self-attention over the queries,
          cross-attention to the chunk's frames, FFN, x L layers, final LayerNorm-->  [n_chunks, Q, C]
        --projector Linear(C -> H)-->                                                 [n_chunks, Q, H]
    a clip's chunks concatenate in order: Q tokens per 30 s of audio

The decoder is transformers' WhisperDecoder used as is (Uni-MoE calls it with the queries as
inputs_embeds, so its self-attention stays causal): random init from a config, or the decoder of the
same Whisper whose encoder is the audio tower (`{"name": "tiny.en", "weights": "packaged"}` loads the
packaged weights, zoo.integrations.whisper_weights). Its token embedding table is dropped (the queries
replace tokens). Padded chunks (the Whisper default, 1500 frames each) run as one batch; trimmed chunks
of different lengths (`trim=True` towers) run one by one on their own frames, so padding is never
attended to.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..core.validation import check_positive_int


def whisper_config_of(spec: Mapping):
    """The WhisperConfig an audio-tower spec describes ({"config": {...}} or {"name": packaged name})."""
    from transformers import WhisperConfig

    if spec.get("config") is not None:
        config = dict(spec["config"])
        config.pop("model_type", None)
        return WhisperConfig(**config)
    if spec.get("name") is None:
        raise ValueError("a Whisper spec needs 'name' (a packaged Whisper) or 'config' (WhisperConfig fields)")
    from ..integrations.whisper_weights import packaged_whisper

    return packaged_whisper(spec["name"]).config()


def build_whisper_decoder(spec: Mapping, load_weights: bool = True) -> nn.Module:
    """The Whisper decoder of an audio-tower spec: packaged weights when the spec names them (and
    `load_weights`), else random init (also on the meta device). The token embedding is removed."""
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    on_meta = torch.empty(0).device.type == "meta"
    if spec.get("weights") == "packaged" and load_weights and not on_meta:
        from ..integrations.whisper_weights import load_whisper

        decoder = load_whisper(spec["name"], progress=False)[0].model.decoder
    else:
        decoder = WhisperDecoder(whisper_config_of(spec))
    decoder.embed_tokens = None  # queries are given as embeddings
    return decoder


class WhisperQFormer(nn.Module):
    """Learnable queries -> Whisper decoder over the encoder frames -> Linear; see the module docstring.

    forward(frames [n, T, C], lengths [n] | None) -> [n, Q, H]"""

    def __init__(self, decoder: nn.Module, num_query_tokens: int, out_features: int):
        super().__init__()
        check_positive_int(self, num_query_tokens=num_query_tokens, out_features=out_features)
        config = decoder.config
        if num_query_tokens > config.max_target_positions:
            raise ValueError(f"WhisperQFormer.num_query_tokens ({num_query_tokens}) exceeds the decoder's "
                             f"{config.max_target_positions} positions")
        self.decoder = decoder
        self.hidden_size = config.d_model
        self.num_query_tokens = num_query_tokens
        self.query_tokens = nn.Parameter(torch.empty(1, num_query_tokens, config.d_model))  # Uni-MoE: [1, 50, 768]
        self.projector = nn.Linear(config.d_model, out_features)
        if not self.query_tokens.is_meta:
            nn.init.normal_(self.query_tokens, std=0.02)

    def _decode(self, frames: torch.Tensor) -> torch.Tensor:  # [n, T, C] -> [n, Q, C]
        queries = self.query_tokens.expand(frames.shape[0], -1, -1)
        return self.decoder(inputs_embeds=queries, encoder_hidden_states=frames, use_cache=False).last_hidden_state

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if frames.dim() != 3 or frames.shape[-1] != self.hidden_size:
            raise ValueError(f"the Q-Former expects encoder frames [chunks, frames, {self.hidden_size}], "
                             f"got {tuple(frames.shape)}")
        frames = frames.to(self.query_tokens.dtype)
        if lengths is None or frames.shape[0] == 0 or bool((lengths == frames.shape[1]).all()):
            hidden = self._decode(frames)
        else:  # ragged trimmed chunks: each on its own frames only
            hidden = torch.cat([self._decode(frames[i:i + 1, :int(n)]) for i, n in enumerate(lengths.tolist())])
        return self.projector(hidden)  # [n, Q, H]


def build_whisper_qformer(spec: Mapping, num_query_tokens: int, out_features: int,
                          load_weights: bool = True) -> WhisperQFormer:
    return WhisperQFormer(build_whisper_decoder(spec, load_weights), num_query_tokens, out_features)


__all__ = ["WhisperQFormer", "build_whisper_decoder", "build_whisper_qformer", "whisper_config_of"]
