"""MoFMEConfig: the all-weather restoration network of MoFME (arXiv 2312.16610). Defaults = paper size."""

from transformers import PreTrainedConfig

from zoo.core.dispatch import check_backend
from zoo.core.validation import check_choice, check_non_negative_int, check_number, check_positive_int, strict_config

MOE_TYPES = ("fme", "ffn")  # Feature-Modulated Experts, or the conventional MoE counterpart (E full FFNs)
ROUTER_TYPES = ("uncertainty", "top_k")  # the paper's UaR, or the plain softmax(KeepTopK) router
# how tokens return to pixels: the released per-token Linear + pixel shuffle (each token paints its own p x p block),
# or a Linear to decoder_channels per token upsampled bilinearly (neighbouring tokens blend: no block edges)
UNEMBEDDINGS = ("pixel_shuffle", "bilinear")
POSITIVE_INTS = ("num_channels", "head_channels", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "num_experts", "num_experts_per_tok", "adaptor_ratio", "ffn_ratio", "uar_num_samples", "decoder_channels",
                 "decoder_hidden_channels")
# name -> the interval it must lie in (check_number's keywords)
FLOAT_RANGES = {
    "hidden_dropout": dict(low=0, high=1, high_open=True),
    "uar_dropout": dict(low=0, high=1, low_open=True, high_open=True, note="(MC dropout needs randomness)"),
    "uar_ridge": dict(low=0),
    "uar_momentum": dict(low=0, high=1, low_open=True),
    "router_aux_loss_coef": dict(low=0),
}


@strict_config
class MoFMEConfig(PreTrainedConfig):
    r"""
    Args:
        num_channels (`int`, 3): image channels in and out.
        head_channels (`int`, 32): width of the conv head (conv3x3 + `num_head_res_blocks` ResBlocks).
        num_head_res_blocks (`int`, 2)
        patch_size (`int`, 8): the patch embedding is a conv with kernel = stride = patch_size.
        hidden_size (`int`, 384), num_hidden_layers (`int`, 2), num_attention_heads (`int`, 8)
        hidden_dropout (`float`, 0.1): dropout on attention/FFN outputs (paper code: 0.1).
        moe_type (`str`, "fme"): "fme" = one shared FFN + per-expert FiLM (MoFME); "ffn" = E independent
            FFN experts (hidden_size -> ffn_ratio * hidden_size -> hidden_size) with the same router.
        num_experts (`int`, 16), num_experts_per_tok (`int`, 4): the paper sweeps E in {4, 8, 16}, k in {2, 4}.
        adaptor_ratio (`int`, 4): the FME's shared output adaptor is D -> adaptor_ratio*D -> D.
        ffn_ratio (`int`, 4): width of each conventional FFN expert.
        router_type (`str`, "uncertainty"): "uncertainty" = UaR (zoo.core.uncertainty_router), "top_k" = base router.
        uar_num_samples (`int`, 5), uar_dropout (`float`, 0.1), uar_ridge (`float`, 0.1), uar_momentum (`float`, 0.1):
            UaR's MC-dropout ensemble size (paper code: 5), router-input dropout, covariance ridge, running-stat momentum.
        decoder_channels (`int`, 128): tokens are projected to patch_size^2 * decoder_channels and
            rearranged into a [decoder_channels, H, W] map (paper: 8*8*32*4 = 8192 = 64 * 128).
        decoder_hidden_channels (`int`, 64)
        unembedding (`str`, "pixel_shuffle"): "pixel_shuffle" = the released Linear(D -> p*p*C) + pixel rearrange;
            "bilinear" = Linear(D -> C) per token, bilinearly upsampled x p (see modeling_mofme, "Departures").
        decoder_skip (`bool`, False): add the head's full-resolution features (conv1x1 to decoder_channels) to the
            decoder input, so detail finer than a patch does not have to pass through the tokens.
        residual (`bool`, False): predict the clean image as input + correction instead of directly
            (the paper's script passes --disable-residual; tiny CPU recipes turn it on to train fast).
        router_aux_loss_coef (`float`, 0.0): balance-loss coefficient (MoFME has no auxiliary loss).
        dispatch_backend (`str`, "auto"): grouped-linear backend (zoo.core.dispatch).
    """

    model_type = "mofme"

    num_channels: int = 3
    head_channels: int = 32
    num_head_res_blocks: int = 2
    patch_size: int = 8
    hidden_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    hidden_dropout: float | int = 0.1
    moe_type: str = "fme"
    num_experts: int = 16
    num_experts_per_tok: int = 4
    adaptor_ratio: int = 4
    ffn_ratio: int = 4
    router_type: str = "uncertainty"
    uar_num_samples: int = 5
    uar_dropout: float | int = 0.1
    uar_ridge: float | int = 0.1
    uar_momentum: float | int = 0.1
    decoder_channels: int = 128
    decoder_hidden_channels: int = 64
    unembedding: str = "pixel_shuffle"
    decoder_skip: bool = False
    residual: bool = False
    router_aux_loss_coef: float | int = 0.0
    dispatch_backend: str = "auto"
    output_router_logits: bool = False

    def validate_architecture(self) -> None:
        """Part of @strict's validation (after __init__ and before save_pretrained); the types are checked by
        the annotations above."""
        super().validate_architecture()
        check_positive_int(self, **{name: getattr(self, name) for name in POSITIVE_INTS})
        check_non_negative_int(self, num_head_res_blocks=self.num_head_res_blocks)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"MoFMEConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})")
        check_choice(self, "moe_type", self.moe_type, MOE_TYPES)
        check_choice(self, "router_type", self.router_type, ROUTER_TYPES)
        check_choice(self, "unembedding", self.unembedding, UNEMBEDDINGS)
        check_backend(self, self.dispatch_backend)
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"MoFMEConfig.num_experts_per_tok ({self.num_experts_per_tok}) must be <= num_experts ({self.num_experts})")
        if self.router_type == "uncertainty" and self.uar_num_samples < 2:
            raise ValueError(f"MoFMEConfig.uar_num_samples must be >= 2 for the uncertainty router, got {self.uar_num_samples}")
        for name, interval in FLOAT_RANGES.items():
            check_number(self, name, getattr(self, name), **interval)


__all__ = ["MoFMEConfig"]
