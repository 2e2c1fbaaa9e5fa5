"""Uncertainty-aware Router (UaR, arXiv 2312.16610), implemented from the paper's formula.

The paper: an MC-dropout "router ensemble" of M passes gives the mean mu and covariance Sigma of
the routing scores, and the calibrated routing weights are

    r~ = Sigma^-1 (r - mu) / || Sigma^-1 (r - mu) ||_2

The released code cannot be followed (its router has no dropout, so the M passes are identical;
the list of samples is never reset between layers; the einsum shapes do not match), so every
choice below is ours, made so the formula gives usable combine weights:

* What the ensemble is. Scores are router logits s = W x (softmax outputs would make Sigma singular:
  they sum to 1, so the all-ones direction has zero variance). The M MC-dropout passes
  s_m = W dropout_m(x) are pooled over the T tokens of the batch, and mu [E], Sigma [E, E] are the
  mean and covariance of those M*T score vectors. Per-token statistics would be useless here: for a
  linear router E[W dropout(x)] = W x, so r - mu_token is only sampling noise.
* What r - mu means. r = W x (dropout off) is the token's own score; r - mu is how much more (or
  less) the token prefers each expert than the typical token does. Sigma^-1 whitens it: experts whose
  scores vary a lot across tokens *and* across dropout samples (uncertain experts) are trusted less,
  and correlated experts stop double-counting. Dividing by the norm keeps only the direction.
* Regularised covariance. Sigma is estimated from few samples and can be near singular, so we add a
  ridge: Sigma + (ridge * trace(Sigma) / E + 1e-6) I.
* Sign, top-k, normalisation. r~ is a unit vector with signed entries, not a mixture. We use it as
  calibrated logits: z = tau * r~ with a learned temperature tau (init sqrt(E)), then the paper's
  base router softmax(KeepTopK_k(z)) -> k weights that are positive and sum to 1.
* Eval. Like BatchNorm, training uses the batch's ensemble statistics (with gradient) and keeps
  running averages (momentum); eval uses the running mu / Sigma, so a token's routing does not
  depend on the other images in the batch or on how a large image is tiled.
* Uncertainty report. Every forward also calibrates each of the M dropout samples and stores, per
  token, the mean over experts of the std (over samples) of the routing probabilities in
  `last_uncertainty` [T]; at eval the dropout masks come from a generator seeded with `eval_seed`,
  so the report is reproducible. It does not change the eval output.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .routing import TopKRouter
from .validation import check_non_negative_int, check_number, check_positive_int


def ensemble_statistics(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """samples [M, T, E] -> mean [E], covariance [E, E] over all M*T score vectors (unbiased)."""
    flat = samples.reshape(-1, samples.shape[-1])
    mean = flat.mean(0)
    centered = flat - mean
    return mean, centered.T @ centered / max(flat.shape[0] - 1, 1)


def regularised_precision(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    """(Sigma + (ridge * tr(Sigma) / E + 1e-6) I)^-1 via Cholesky, [E, E]."""
    num_experts = cov.shape[-1]
    shift = ridge * torch.diagonal(cov).sum() / num_experts + 1e-6
    reg = cov + shift * torch.eye(num_experts, device=cov.device, dtype=cov.dtype)
    return torch.cholesky_inverse(torch.linalg.cholesky(reg))


def calibrate(scores: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """r~ = Sigma^-1 (r - mu) / ||Sigma^-1 (r - mu)||, scores [..., E] -> unit vectors [..., E]."""
    whitened = (scores - mean) @ precision  # precision is symmetric
    return whitened / whitened.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class UncertaintyAwareRouter(TopKRouter):
    """Top-k router on uncertainty-calibrated scores (see the module docstring for the formula)."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        num_samples: int = 5,
        dropout: float = 0.1,
        ridge: float = 0.1,
        momentum: float = 0.1,
        eval_seed: int = 0,
        jitter: float = 0.0,
        capacity_factor: float | None = None,
        min_capacity: int = 4,
    ):
        super().__init__(hidden_size, num_experts, top_k, normalize=True, jitter=jitter,
                         capacity_factor=capacity_factor, min_capacity=min_capacity)
        check_positive_int(self, num_samples=num_samples)
        check_non_negative_int(self, eval_seed=eval_seed)
        if num_samples < 2:
            raise ValueError(f"{type(self).__name__}.num_samples must be >= 2 (a covariance needs two samples), got {num_samples}")
        check_number(self, "dropout", dropout, low=0, high=1, low_open=True, high_open=True, note="(MC dropout needs randomness)")
        check_number(self, "ridge", ridge, low=0)
        check_number(self, "momentum", momentum, low=0, high=1, low_open=True)
        self.num_samples = num_samples
        self.dropout = dropout
        self.ridge = ridge
        self.momentum = momentum
        self.eval_seed = eval_seed
        self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(num_experts)))
        self.register_buffer("running_mean", torch.zeros(num_experts))
        self.register_buffer("running_cov", torch.eye(num_experts))
        self.last_uncertainty: torch.Tensor | None = None  # [T], set by every forward

    def mc_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """M router passes with dropout on the router input: [T, H] -> [M, T, E] fp32."""
        hidden = hidden.float()
        shape = (self.num_samples, *hidden.shape)
        if self.training:
            keep = torch.rand(shape, device=hidden.device) >= self.dropout
        else:
            generator = torch.Generator(device=hidden.device).manual_seed(self.eval_seed)
            keep = torch.rand(shape, device=hidden.device, generator=generator) >= self.dropout
        dropped = hidden * keep / (1.0 - self.dropout)  # [M, T, H]
        return F.linear(dropped, self.weight.float())

    def router_logits(self, hidden: torch.Tensor, modality_ids: torch.Tensor | None) -> torch.Tensor:
        # refused before anything is computed: one NaN pixel would otherwise reach running_mean /
        # running_cov and break every later eval call (and every checkpoint saved after)
        if not bool(torch.isfinite(hidden).all()):
            raise ValueError(f"{type(self).__name__}: the hidden states hold NaN or inf (a non-finite input, or a "
                             "layer before the router overflowed); refused before the running statistics change")
        scores = F.linear(hidden.float(), self.weight.float())  # r [T, E], dropout off
        samples = self.mc_scores(hidden)  # [M, T, E]
        if self.training and hidden.shape[0] > 0:
            mean, cov = ensemble_statistics(samples)
            if not bool(torch.isfinite(cov).all()):  # finite inputs whose scores overflow fp32
                raise ValueError(f"{type(self).__name__}: the router scores of this batch overflow (covariance not "
                                 "finite); refused before the running statistics change")
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_cov.lerp_(cov.detach().to(self.running_cov.dtype), self.momentum)
        else:  # statistics stay fp32 even in a bf16 model (Cholesky has no bf16 kernel)
            mean, cov = self.running_mean.float(), self.running_cov.float()
        precision = regularised_precision(cov, self.ridge)
        temperature = self.log_temperature.float().exp()
        with torch.no_grad():
            sample_probs = torch.softmax(temperature * calibrate(samples, mean, precision), dim=-1)  # [M, T, E]
            self.last_uncertainty = sample_probs.std(dim=0).mean(dim=-1)  # [T]
        return temperature * calibrate(scores, mean, precision)  # [T, E] calibrated logits

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_samples={self.num_samples}, dropout={self.dropout}, ridge={self.ridge}"
