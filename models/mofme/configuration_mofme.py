"""MoFMEConfig: the all-weather restoration network of MoFME (arXiv 2312.16610). Defaults = paper size."""
from __future__ import annotations

from transformers import PretrainedConfig

MOE_TYPES = ("fme", "ffn")  # Feature-Modulated Experts, or the conventional MoE counterpart (E full FFNs)
ROUTER_TYPES = ("uncertainty", "top_k")  # the paper's UaR, or the plain softmax(KeepTopK) router
# name -> (lower test, upper test, interval for the message)
FLOAT_RANGES = {
    "hidden_dropout": (lambda v: v >= 0, lambda v: v < 1, "[0, 1)"),
    "uar_dropout": (lambda v: v > 0, lambda v: v < 1, "(0, 1) (MC dropout needs randomness)"),
    "uar_ridge": (lambda v: v >= 0, lambda v: True, "[0, inf)"),
    "uar_momentum": (lambda v: v > 0, lambda v: v <= 1, "(0, 1]"),
    "router_aux_loss_coef": (lambda v: v >= 0, lambda v: True, "[0, inf)"),
}


class MoFMEConfig(PretrainedConfig):
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
        residual (`bool`, False): predict the clean image as input + correction instead of directly
            (the paper's script passes --disable-residual; tiny CPU recipes turn it on to train fast).
        router_aux_loss_coef (`float`, 0.0): balance-loss coefficient (MoFME has no auxiliary loss).
        dispatch_backend (`str`, "auto"): grouped-linear backend (zoo.core.dispatch).
    """

    model_type = "mofme"

    def __init__(
        self,
        num_channels: int = 3,
        head_channels: int = 32,
        num_head_res_blocks: int = 2,
        patch_size: int = 8,
        hidden_size: int = 384,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 8,
        hidden_dropout: float = 0.1,
        moe_type: str = "fme",
        num_experts: int = 16,
        num_experts_per_tok: int = 4,
        adaptor_ratio: int = 4,
        ffn_ratio: int = 4,
        router_type: str = "uncertainty",
        uar_num_samples: int = 5,
        uar_dropout: float = 0.1,
        uar_ridge: float = 0.1,
        uar_momentum: float = 0.1,
        decoder_channels: int = 128,
        decoder_hidden_channels: int = 64,
        residual: bool = False,
        router_aux_loss_coef: float = 0.0,
        dispatch_backend: str = "auto",
        output_router_logits: bool = False,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.head_channels = head_channels
        self.num_head_res_blocks = num_head_res_blocks
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_dropout = hidden_dropout
        self.moe_type = moe_type
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.adaptor_ratio = adaptor_ratio
        self.ffn_ratio = ffn_ratio
        self.router_type = router_type
        self.uar_num_samples = uar_num_samples
        self.uar_dropout = uar_dropout
        self.uar_ridge = uar_ridge
        self.uar_momentum = uar_momentum
        self.decoder_channels = decoder_channels
        self.decoder_hidden_channels = decoder_hidden_channels
        self.residual = residual
        self.router_aux_loss_coef = router_aux_loss_coef
        self.dispatch_backend = dispatch_backend
        self.output_router_logits = output_router_logits
        super().__init__(**kwargs)
        self.validate_mofme()

    def validate_mofme(self) -> None:
        for name in ("num_channels", "head_channels", "patch_size", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "num_experts", "num_experts_per_tok", "adaptor_ratio", "ffn_ratio",
                     "uar_num_samples", "decoder_channels", "decoder_hidden_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MoFMEConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_head_res_blocks, int) or self.num_head_res_blocks < 0:
            raise ValueError(f"MoFMEConfig.num_head_res_blocks must be an integer >= 0, got {self.num_head_res_blocks!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"MoFMEConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})")
        if self.moe_type not in MOE_TYPES:
            raise ValueError(f"MoFMEConfig.moe_type must be one of {MOE_TYPES}, got {self.moe_type!r}")
        if self.router_type not in ROUTER_TYPES:
            raise ValueError(f"MoFMEConfig.router_type must be one of {ROUTER_TYPES}, got {self.router_type!r}")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"MoFMEConfig.num_experts_per_tok ({self.num_experts_per_tok}) must be <= num_experts ({self.num_experts})")
        if self.router_type == "uncertainty" and self.uar_num_samples < 2:
            raise ValueError(f"MoFMEConfig.uar_num_samples must be >= 2 for the uncertainty router, got {self.uar_num_samples}")
        for name, (low, high, text) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if not (low(value) and high(value)):
                raise ValueError(f"MoFMEConfig.{name} must be in {text}, got {value!r}")


__all__ = ["MoFMEConfig"]
