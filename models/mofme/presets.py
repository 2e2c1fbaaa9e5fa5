"""MoFME at paper size (D = 384, depth 2, 8 heads, 240 x 240 crops) over the paper's sweep
E in {4, 8, 16}, k in {2, 4}, for both the FME model and its conventional MoE counterpart, plus the
tiny (test suite) and small (gallery, `zoo eval mofme`) CPU configurations the shipped weights use. Paper-size models are built on the meta device."""
from __future__ import annotations

import torch

from zoo.core.presets import Presets

from .configuration_mofme import MoFMEConfig

PAPER_EXPERTS = (4, 8, 16)
PAPER_TOP_K = (2, 4)


def paper_config(num_experts: int = 16, top_k: int = 4, moe_type: str = "fme", **overrides) -> MoFMEConfig:
    return MoFMEConfig(num_experts=num_experts, num_experts_per_tok=top_k, moe_type=moe_type, **overrides)


# CPU-trainable in minutes: D = 96, 4 experts top-2, 64 x 64 crops, residual output.
TINY = dict(head_channels=16, num_head_res_blocks=2, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_experts=4, num_experts_per_tok=2, decoder_channels=16, decoder_hidden_channels=16, residual=True,
            hidden_dropout=0.0)

# `zoo train mofme --recipe small` (~45 min for both on one CPU thread): D = 128, 4 layers, 8 experts top-2, 96 x 96
# crops; tokens return to pixels bilinearly, plus a skip from the head (no patch lattice: modeling_mofme, Departures)
SMALL = dict(TINY, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_experts=8, num_experts_per_tok=2,
             unembedding="bilinear", decoder_skip=True)

# read-only; a lookup is a copy of the config, so editing it never changes the preset
PRESETS: Presets[MoFMEConfig] = Presets("MoFME preset", {
    **{f"paper-{kind}-e{e}-k{k}": paper_config(e, k, kind)
       for kind in ("fme", "ffn") for e in PAPER_EXPERTS for k in PAPER_TOP_K},
    "tiny-fme": MoFMEConfig(moe_type="fme", **TINY),
    "tiny-ffn": MoFMEConfig(moe_type="ffn", **TINY),
    "small-fme": MoFMEConfig(moe_type="fme", **SMALL),
    "small-ffn": MoFMEConfig(moe_type="ffn", **SMALL),
})


def build_on_meta(config: MoFMEConfig):
    """The model with parameters on the meta device: counts without allocating memory."""
    from .modeling_mofme import MoFMEForImageRestoration

    with torch.device("meta"):
        return MoFMEForImageRestoration(config)


def moe_ffn_parameters(model) -> int:
    """Parameters of the MoE FFN blocks (router + experts + shared FFN parts), all layers."""
    return sum(p.numel() for layer in model.layers for p in layer.moe.parameters())
