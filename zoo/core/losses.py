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


# -- per-modality losses (modality ids: zoo.core.modalities) ---------------------------------------------------------
# Shapes: B sequences of S tokens, E experts; probs are the router's softmax over all E experts.
def _sequence_inputs(probs: torch.Tensor, modality_ids: torch.Tensor, padding_mask: torch.Tensor | None):
    """probs [B, S, E] (or [T, E]: one sequence), modality_ids / padding_mask [B, S] (or [T]) -> 3-D / 2-D views."""
    if probs.dim() == 2:
        probs, modality_ids = probs[None], modality_ids[None]
        padding_mask = None if padding_mask is None else padding_mask[None]
    if probs.dim() != 3 or modality_ids.shape != probs.shape[:2]:
        raise ValueError(f"probs must be [B, S, E] with modality_ids [B, S]; got probs {tuple(probs.shape)}, "
                         f"modality_ids {tuple(modality_ids.shape)}")
    if padding_mask is None:
        real = torch.ones(modality_ids.shape, dtype=torch.bool, device=probs.device)
    elif padding_mask.shape != modality_ids.shape:
        raise ValueError(f"padding_mask must have shape {tuple(modality_ids.shape)}, got {tuple(padding_mask.shape)}")
    else:
        real = padding_mask.to(device=probs.device, dtype=torch.bool)
    return probs.float(), modality_ids.to(probs.device), real


def modality_expert_l1_loss(
    probs: torch.Tensor,  # [B, S, E] router probabilities (fp32)
    modality_ids: torch.Tensor,  # [B, S] long
    designated_experts: dict[int, list[int]],  # modality id -> the experts its tokens should go to
    padding_mask: torch.Tensor | None = None,  # [B, S] True = real token
) -> torch.Tensor:
    """Pulls each modality's tokens to its designated experts (arXiv 2405.11273, the release with 8 experts):

        loss_b = sum over modalities m with designated experts of (n_bm / n_b) * mean_{t in m, e} |p_te - y_me|
        loss   = mean over the B sequences           y_m = multi-hot of m's experts [E], n_b = real tokens of b

    Zero when every token of such a modality puts all its probability on one designated expert and
    the modality has exactly one. Modalities without designated experts (text, usually) add nothing."""
    probs, modality_ids, real = _sequence_inputs(probs, modality_ids, padding_mask)
    batch, _, num_experts = probs.shape
    total = probs.new_zeros(())
    for modality, experts in designated_experts.items():
        target = torch.zeros(num_experts, device=probs.device)
        target[list(experts)] = 1.0  # [E] multi-hot
        chosen = (modality_ids == modality) & real  # [B, S]
        per_token = (probs - target).abs().mean(dim=-1)  # [B, S], mean over experts
        count = chosen.sum(dim=1)  # [B]
        mean_l1 = (per_token * chosen).sum(dim=1) / count.clamp_min(1)  # [B], 0 where m is absent
        total = total + (count / real.sum(dim=1).clamp_min(1) * mean_l1).sum()
    return total / max(batch, 1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_e p_e (log p_e - log q_e) over the last axis; 0 log 0 = 0, q clamped away from 0."""
    return (torch.special.xlogy(p, p) - p * torch.log(q.clamp_min(1e-20))).sum(dim=-1)


def modality_kl_separation_loss(
    probs: torch.Tensor,  # [B, S, E] router probabilities (fp32)
    modality_ids: torch.Tensor,  # [B, S] long
    padding_mask: torch.Tensor | None = None,  # [B, S] True = real token
) -> torch.Tensor:
    """Pushes the modalities' routing apart (the KL auxiliary loss of arXiv 2405.11273):

        P_bm   = mean router distribution over the real tokens of modality m in sequence b      [E]
        loss_b = mean over pairs m < m' present in b of (1 - KL(P_bm || P_bm'))
        loss   = mean over the sequences that hold two modalities or more (0 if none does)

    Minimising it raises the divergence between every pair of modalities; it is 1 when they route alike
    and has no lower bound (KL is unbounded), so keep its coefficient small."""
    probs, modality_ids, real = _sequence_inputs(probs, modality_ids, padding_mask)
    per_sequence = []
    for b in range(probs.shape[0]):
        present = sorted(int(m) for m in torch.unique(modality_ids[b][real[b]]))
        means = [probs[b][(modality_ids[b] == m) & real[b]].mean(dim=0) for m in present]  # each [E]
        pairs = [1.0 - kl_divergence(means[i], means[j]) for i in range(len(means)) for j in range(i + 1, len(means))]
        if pairs:
            per_sequence.append(torch.stack(pairs).mean())
    return torch.stack(per_sequence).mean() if per_sequence else probs.new_zeros(())
