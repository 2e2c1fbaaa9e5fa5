"""Router losses against hand-computed values and transformers' own `load_balancing_loss_func`."""
from __future__ import annotations

import math

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from zoo import load_balancing_loss, router_z_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def test_load_balance_by_hand():
    probs = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    indices = torch.tensor([[0], [0]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    # f = [2/2, 0], P = [0.625, 0.375] -> 2 * (1 * 0.625)
    assert load_balancing_loss(probs, indices, mask).item() == pytest.approx(1.25)
    # padding drops token 1: f = [1, 0], P = [0.75, 0.25]
    assert load_balancing_loss(probs, indices, mask, torch.tensor([True, False])).item() == pytest.approx(1.5)
    # an unused slot (variable k) does not count: token 1 routes nowhere -> f = [1/2, 0]
    assert load_balancing_loss(probs, indices, torch.tensor([[True], [False]])).item() == pytest.approx(0.625)


def test_load_balance_uniform_routing_is_k():
    # perfectly balanced top-2 over 4 experts: E * sum_e (k/E) * (1/E) = k
    probs = torch.full((4, 4), 0.25)
    indices = torch.tensor([[0, 1], [2, 3], [1, 2], [3, 0]])
    assert load_balancing_loss(probs, indices, torch.ones(4, 2, dtype=torch.bool)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_load_balance_matches_transformers(top_k, padded):
    g = torch.Generator().manual_seed(top_k)
    batch, seq, num_experts = 3, 7, 8
    logits = torch.randn(batch * seq, num_experts, generator=g)
    attention = (torch.rand(batch, seq, generator=g) > 0.3).long() if padded else None
    want = load_balancing_loss_func((logits,), num_experts, top_k, attention)
    probs = torch.softmax(logits, dim=-1)
    indices = torch.topk(probs, top_k, dim=-1).indices
    mask = torch.ones_like(indices, dtype=torch.bool)
    padding = None if attention is None else attention.reshape(-1).bool()
    assert load_balancing_loss(probs, indices, mask, padding).item() == pytest.approx(want.item(), rel=1e-6)


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [1.0, float("-inf")], [2.0, 0.0]])
    z = [math.log(2) ** 2, 1.0, math.log(math.exp(2) + 1) ** 2]
    assert router_z_loss(logits).item() == pytest.approx(sum(z) / 3)
    assert router_z_loss(logits, torch.tensor([True, True, False])).item() == pytest.approx((z[0] + z[1]) / 2)


def test_losses_of_zero_tokens_are_zero():
    assert load_balancing_loss(torch.zeros(0, 4), torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.bool)).item() == 0.0
    assert router_z_loss(torch.zeros(0, 4)).item() == 0.0


def test_padding_mask_shape_is_checked():
    with pytest.raises(ValueError, match="padding_mask"):
        router_z_loss(torch.zeros(3, 4), torch.ones(2, dtype=torch.bool))
