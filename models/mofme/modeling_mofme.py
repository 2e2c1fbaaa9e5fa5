"""MoFME for all-weather image restoration (Zhang et al., AAAI 2024, arXiv 2312.16610).

The network, top to bottom as in the paper's figure and released code (models/mowe.py):

    image [B, 3, H, W]
      head:    conv3x3 (3 -> 32) + 2 ResBlocks                        [B, 32, H, W]
      embed:   conv k = s = 8 (32 -> 384) + LayerNorm                  [B, N, 384], N = (H/8)(W/8)
      2 x layer:
               x += Attention(LN x)                                    8 heads x 48 (no position embedding, as released)
               x += MoE-FFN(x)                                         FME (shared FFN + per-expert FiLM) or E full FFNs
      decoder: Linear(384 -> 8*8*128), pixel rearrange                 [B, 128, H, W]
               (or Linear(384 -> 128), bilinear x8; + conv1x1(head) skip: see Departures)
               ResBlock, conv 128 -> 64, ResBlock, conv 64 -> 3, sigmoid
    restored [B, 3, H, W] in [0, 1]

Routers: the Uncertainty-aware Router (`zoo.core.uncertainty_router.UncertaintyAwareRouter`; the paper's
formula r~ = Sigma^-1 (r - mu) / ||Sigma^-1 (r - mu)|| read as ensemble statistics over the MC-dropout
passes of all tokens, whitened scores used as calibrated logits for softmax(KeepTopK), running
statistics at eval; that module's docstring explains each choice) or the plain top-k router.

Departures from the released code, and why:
- The conventional MoE counterpart (`moe_type="ffn"`) shares one LayerNorm in front of its experts
  instead of one per expert, so both variants differ only in what an expert is; both routers read
  the layer input x.
- Dispatch is sparse (zoo.core.dispatch): a token computes only its k experts. The released code computes
  all E and multiplies by zero weights; the outputs are the same.
- The decoder's `Upsampler(x1)` is left out: at scale 1 it adds nothing the next conv cannot do.
- `unembedding="bilinear"` and `decoder_skip=True` (the `small` preset; defaults keep the released decoder):
  the released per-token Linear + pixel shuffle paints each 8 x 8 block from one token, and on hazy photos
  the tiny model's output carried that lattice (issue 17; `zoo.pipelines.evaluate_mofme.patch_grid_ratio`
  measures it). Tokens are instead projected to decoder_channels and upsampled bilinearly, and the head's
  full-resolution features are added back (conv1x1), as U-shaped restoration networks do, so what is finer
  than a patch need not pass through a token. The FME layers and the counterpart comparison are unchanged.
- `residual=True` (not the paper's setting) adds the input image back, for quick CPU training.
- `forward(..., reconstruction_loss="l2")` trains on the squared error instead of the paper's L1. With a
  residual output, L1 makes "correction = 0" (output = input) a sharp optimum for effects that touch a
  minority of pixels (rain streaks: ~20%, raindrops: ~33% of pixels at severity 0.5), because L1's
  optimal correction is the median change, which is 0 until the network can tell affected pixels from
  clean ones; the squared error's optimum is the mean change, non-zero from the start, so training
  leaves that plateau (pipelines/train_mofme.py says what was measured).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from zoo.core import MLPExperts, TopKRouter, dispatch
from zoo.experts.film import FeatureModulatedExperts, FiLMExperts
from zoo.integrations.lora_targets import LoraTargets
from zoo.integrations.checkpoint_keys import StrictMoeLoading
from zoo.core.routing import Router, RoutingResult
from zoo.core.uncertainty_router import UncertaintyAwareRouter

from .configuration_mofme import MoFMEConfig


@dataclass
class MoFMEImageRestorationOutput(ModelOutput):
    """loss: L1 (or squared error) to `labels` (+ aux). reconstruction: [B, C, H, W] in [0, 1].
    With `output_router_logits=True`, per MoE layer: router_logits [B*N, E], routing_weights [B, N, E]
    (combine weights, 0 for unused experts) and routing_uncertainty [B, N] (UaR only)."""

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    routing_weights: tuple[torch.Tensor, ...] | None = None
    routing_uncertainty: tuple[torch.Tensor, ...] | None = None


PSNR_LOSS_FLOOR = 1e-4  # squared error added before the log: a sample past 40 dB stops pulling harder


def psnr_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the mean PSNR over the batch (data range 1): 10 log10(per-image squared error + floor), averaged
    (HINet's "PSNR loss", Chen et al. 2021). Unlike the squared error over the batch, a hazy crop (squared
    error ~1e-2) does not outweigh a raindrop crop (~1e-3) ten-fold: each image's relative error counts."""
    per_image = (prediction - target).pow(2).flatten(1).mean(1)  # [B]
    return 10 * torch.log10(per_image + PSNR_LOSS_FLOOR).mean()


def rmse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each image's root-mean-squared error: between the squared error (every pixel of
    the batch weighs the same, so hazy crops dominate) and psnr_loss (weight 1 / squared error, so nearly
    clean crops dominate): an image's pixels weigh 1 / (2 x its RMSE)."""
    return (prediction - target).pow(2).flatten(1).mean(1).add(PSNR_LOSS_FLOOR).sqrt().mean()


RECONSTRUCTION_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "psnr": psnr_loss, "rmse": rmse_loss}


class MoFMEResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 + skip (EDSR style, as in the released code)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MoFMEHead(nn.Module):
    def __init__(self, config: MoFMEConfig):
        super().__init__()
        self.conv = nn.Conv2d(config.num_channels, config.head_channels, 3, padding=1)
        self.res_blocks = nn.Sequential(*[MoFMEResBlock(config.head_channels) for _ in range(config.num_head_res_blocks)])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, C_head, H, W]
        return self.res_blocks(self.conv(pixels))


class MoFMEPatchEmbedding(nn.Module):
    def __init__(self, config: MoFMEConfig):
        super().__init__()
        self.proj = nn.Conv2d(config.head_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, C_head, H, W] -> [B, N, D]
        return self.norm(self.proj(features).flatten(2).transpose(1, 2))


class MoFMEAttention(nn.Module):
    def __init__(self, config: MoFMEConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D]
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D/heads]
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MoFMEMixtureOfFFN(nn.Module):
    """The conventional MoE counterpart: LN, then E independent FFNs D -> ffn_ratio*D -> D (GELU),
    routed sparsely by the same kind of router on the layer input x."""

    def __init__(self, router: Router, hidden_size: int, ffn_ratio: int, dispatch_backend: str = "auto"):
        super().__init__()
        self.hidden_size = hidden_size
        self.norm = nn.LayerNorm(hidden_size)
        self.router = router
        self.experts = MLPExperts(router.num_experts, hidden_size, ffn_ratio * hidden_size, act="gelu")
        self.dispatch_backend = dispatch_backend

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingResult]:
        flat = x.reshape(-1, self.hidden_size)  # [T, D]
        routing = self.router(flat)
        return dispatch(self.norm(flat), routing, self.experts, self.dispatch_backend).view(x.shape), routing


def build_router(config: MoFMEConfig) -> Router:
    if config.router_type == "uncertainty":
        return UncertaintyAwareRouter(
            config.hidden_size, config.num_experts, config.num_experts_per_tok, num_samples=config.uar_num_samples,
            dropout=config.uar_dropout, ridge=config.uar_ridge, momentum=config.uar_momentum,
        )
    return TopKRouter(config.hidden_size, config.num_experts, config.num_experts_per_tok, normalize=True)


def build_moe_ffn(config: MoFMEConfig) -> nn.Module:
    router = build_router(config)
    if config.moe_type == "fme":
        return FeatureModulatedExperts(router, config.hidden_size, config.adaptor_ratio, config.hidden_dropout,
                                       config.dispatch_backend)
    return MoFMEMixtureOfFFN(router, config.hidden_size, config.ffn_ratio, config.dispatch_backend)


class MoFMELayer(nn.Module):
    def __init__(self, config: MoFMEConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.attention = MoFMEAttention(config)
        self.moe = build_moe_ffn(config)  # carries its own pre-norm
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingResult]:  # [B, N, D]
        x = x + self.dropout(self.attention(self.norm(x)))
        moe_out, routing = self.moe(x)
        return x + self.dropout(moe_out), routing


class MoFMEDecoder(nn.Module):
    """tokens [B, N, D] (+ head features [B, C_head, H, W] with `decoder_skip`) -> [B, 3, H, W].

    unembedding "pixel_shuffle" (released): Linear(D -> p*p*C) + pixel rearrange: every token paints its own
    p x p block, so a correction that varies from token to token has a step at every patch edge (the lattice
    the issue-17 outputs showed; the two ResBlocks' 3x3 convs cannot smooth a step over 8 px).
    unembedding "bilinear": Linear(D -> C) per token, upsampled bilinearly x p (each pixel blends its 2 x 2
    nearest tokens, continuous across patch edges); detail finer than a patch comes from the skip."""

    def __init__(self, config: MoFMEConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.unembedding = config.unembedding
        per_token = config.patch_size**2 if config.unembedding == "pixel_shuffle" else 1
        self.to_pixels = nn.Linear(config.hidden_size, per_token * config.decoder_channels)
        self.skip = nn.Conv2d(config.head_channels, config.decoder_channels, 1) if config.decoder_skip else None
        self.res1 = MoFMEResBlock(config.decoder_channels)
        self.conv1 = nn.Conv2d(config.decoder_channels, config.decoder_hidden_channels, 3, padding=1)
        self.res2 = MoFMEResBlock(config.decoder_hidden_channels)
        self.conv2 = nn.Conv2d(config.decoder_hidden_channels, config.num_channels, 3, padding=1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], head_features: torch.Tensor | None = None) -> torch.Tensor:
        batch, (rows, cols) = tokens.shape[0], grid
        features = self.to_pixels(tokens).transpose(1, 2).reshape(batch, -1, rows, cols)  # [B, (p*p*)C, H/p, W/p]
        if self.unembedding == "pixel_shuffle":
            features = F.pixel_shuffle(features, self.patch_size)  # [B, C, H, W]
        else:
            features = F.interpolate(features, scale_factor=self.patch_size, mode="bilinear", align_corners=False)
        if self.skip is not None:
            features = features + self.skip(head_features)  # [B, C, H, W]
        return self.conv2(self.res2(self.conv1(self.res1(features))))


class MoFMEPreTrainedModel(StrictMoeLoading, PreTrainedModel):
    config_class = MoFMEConfig
    base_model_prefix = "mofme"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MoFMELayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):  # PyTorch's default conv init: N(0, 0.02) would starve the ResBlocks
            init.kaiming_uniform_(module.weight, a=5**0.5)
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -(fan_in**-0.5), fan_in**-0.5)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, FiLMExperts):
            init.normal_(module.film_proj, std=0.02)
            init.zeros_(module.film_proj_bias)
            init.constant_(module.film_proj_bias[:, : module.hidden_size], 1.0)  # gamma = 1: identity FiLM
        elif isinstance(module, MLPExperts):
            init.normal_(module.up_proj, std=0.02)
            init.normal_(module.down_proj, std=0.02)
            init.zeros_(module.up_proj_bias)
            init.zeros_(module.down_proj_bias)
        elif isinstance(module, Router):
            init.normal_(module.weight, std=0.02)
            if isinstance(module, UncertaintyAwareRouter):
                init.constant_(module.log_temperature, 0.5 * float(torch.log(torch.tensor(float(module.num_experts)))))
                init.zeros_(module.running_mean)
                init.eye_(module.running_cov)


class MoFMEForImageRestoration(MoFMEPreTrainedModel):
    @property
    def lora_targets(self) -> LoraTargets:
        """zoo.lora.lora_config: LoRA on the attention projections and the stacked expert weights (FiLM for MoFME,
        up/down for the counterpart); the routers train fully."""
        experts = (("moe.experts.film_proj",) if self.config.moe_type == "fme"
                   else ("moe.experts.up_proj", "moe.experts.down_proj"))
        return LoraTargets(attention=r"layers\.\d+\.attention\.(qkv|proj)", experts=experts, modules_to_save=("router",))

    def __init__(self, config: MoFMEConfig):
        super().__init__(config)
        self.head = MoFMEHead(config)
        self.patch_embed = MoFMEPatchEmbedding(config)
        self.layers = nn.ModuleList([MoFMELayer(config) for _ in range(config.num_hidden_layers)])
        self.decoder = MoFMEDecoder(config)
        self.post_init()

    def check_pixels(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        if pixel_values.dim() != 4 or pixel_values.shape[1] != config.num_channels:
            raise ValueError(f"pixel_values must be [batch, {config.num_channels}, height, width], got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"pixel_values height and width must be multiples of patch_size={config.patch_size}, got {height}x{width} "
                "(MoFMEImageProcessor pads images for you)"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W] in [0, 1]
        labels: torch.Tensor | None = None,  # [B, 3, H, W] clean image
        output_router_logits: bool | None = None,
        return_dict: bool = True,
        reconstruction_loss: str = "l1",  # "l1" (the paper) or "l2" (squared error), see the module docstring
        **kwargs,
    ) -> MoFMEImageRestorationOutput:
        self.check_pixels(pixel_values)
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"reconstruction_loss must be one of {sorted(RECONSTRUCTION_LOSSES)}, got {reconstruction_loss!r}")
        output_router_logits = self.config.output_router_logits if output_router_logits is None else output_router_logits
        batch, _, height, width = pixel_values.shape
        grid = (height // self.config.patch_size, width // self.config.patch_size)

        features = self.head(pixel_values)  # [B, C_head, H, W]
        tokens = self.patch_embed(features)  # [B, N, D]
        routings = []
        for layer in self.layers:
            tokens, routing = layer(tokens)
            routings.append(routing)
        restored = self.decoder(tokens, grid, features)  # [B, 3, H, W]
        if self.config.residual:
            restored = restored + pixel_values
        reconstruction = torch.sigmoid(restored) if not self.config.residual else restored.clamp(0.0, 1.0)

        aux_loss = sum((r.aux_losses["load_balance"] for r in routings), torch.zeros((), device=pixel_values.device))
        loss = None
        if labels is not None:
            if labels.shape != reconstruction.shape:
                raise ValueError(f"labels must match pixel_values' shape {tuple(reconstruction.shape)}, got {tuple(labels.shape)}")
            # in residual mode the clamp would stop gradients where the target is saturated, so use the raw output
            prediction = restored if self.config.residual else reconstruction
            loss = RECONSTRUCTION_LOSSES[reconstruction_loss](prediction, labels) + self.config.router_aux_loss_coef * aux_loss
        out = MoFMEImageRestorationOutput(loss=loss, reconstruction=reconstruction, aux_loss=aux_loss)
        if output_router_logits:
            tokens_per_image = grid[0] * grid[1]
            out.router_logits = tuple(r.logits for r in routings)
            out.routing_weights = tuple(r.dense_weights().view(batch, tokens_per_image, -1) for r in routings)
            uncertainty = [getattr(layer.moe.router, "last_uncertainty", None) for layer in self.layers]
            if all(u is not None for u in uncertainty):
                out.routing_uncertainty = tuple(u.view(batch, tokens_per_image) for u in uncertainty)
        return out if return_dict else out.to_tuple()


__all__ = ["MoFMEForImageRestoration", "MoFMEImageRestorationOutput", "MoFMEPreTrainedModel"]
