"""Auxiliary router losses. Routers compute them and hand them out in `RoutingResult.aux_losses`;
the model decides each coefficient.

Shapes: T tokens, E experts, k routing slots per token.
"""
from __future__ import annotations

import torch


def _token_weights(num_tokens: int, padding_mask: torch.Tensor | None, device) -> torch.Tensor:
    """[T] float: 1 for real tokens, 0 for padding (padding_mask True = real token, as attention masks)."""
    if padding_mask is None:
        return torch.ones(num_tokens, device=device)
    if padding_mask.shape != (num_tokens,):
        raise ValueError(f"padding_mask must have shape ({num_tokens},), got {tuple(padding_mask.shape)}")
    return padding_mask.to(device=device, dtype=torch.float32)


def load_balancing_loss(
    probs: torch.Tensor,  # [T, E] router probabilities (fp32)
    indices: torch.Tensor,  # [T, k] chosen experts
    mask: torch.Tensor,  # [T, k] which slots count
    padding_mask: torch.Tensor | None = None,  # [T] True = real token
) -> torch.Tensor:
    """Switch/GShard balance loss  E * sum_e f_e * P_e.

    f_e is the number of routed slots that chose expert e per real token (so it sums to the mean
    number of experts per token; with top-k this is exactly transformers' `load_balancing_loss_func`),
    P_e the mean router probability of e over real tokens. Minimal (= k) when routing is uniform.
    """
    num_tokens, num_experts = probs.shape
    if num_tokens == 0:
        return probs.new_zeros(())
    real = _token_weights(num_tokens, padding_mask, probs.device)  # [T]
    denominator = real.sum().clamp_min(1.0)
    slot_weight = mask.float() * real[:, None]  # [T, k]
    counts = torch.zeros(num_experts, device=probs.device).index_add_(
        0, indices.reshape(-1), slot_weight.reshape(-1)
    )  # [E]
    fraction_routed = counts / denominator  # [E]
    mean_prob = (probs.float() * real[:, None]).sum(0) / denominator  # [E]
    return num_experts * torch.sum(fraction_routed * mean_prob)


def router_z_loss(logits: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE z-loss: mean over real tokens of logsumexp(logits)^2 (keeps logits small, fp32-stable).
    Logits of -inf (experts a token may not use) are ignored by logsumexp."""
    num_tokens = logits.shape[0]
    if num_tokens == 0:
        return logits.new_zeros(())
    real = _token_weights(num_tokens, padding_mask, logits.device)
    z = torch.logsumexp(logits.float(), dim=-1) ** 2  # [T]
    return (z * real).sum() / real.sum().clamp_min(1.0)
