"""MoME's bottleneck experts and the MoME module against naive per-expert / per-token loops.

The references use plain tensor ops on the modules' parameters (exact-erf GELU written out), one
expert or one token at a time; only the module under test comes from zoo."""
from __future__ import annotations

import math

import pytest
import torch

from tests.tiny_decoders import tiny_decoder, token_ids
from zoo.core.dispatch import ExpertGroups
from zoo.experts import EXPERT_KINDS, BottleneckExperts
from zoo.models.mome.mome_layer import MatryoshkaExperts
from zoo.upcycling import UpcyclePlan, upcycle

pytestmark = pytest.mark.usefixtures("single_thread")
H, B = 16, 5


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def naive_expert(bank: BottleneckExperts, e: int, x: torch.Tensor) -> torch.Tensor:  # x [H]
    return bank.up_proj[e] @ gelu(bank.down_proj[e] @ x)


def random_bank(num_experts: int, seed: int = 0) -> BottleneckExperts:
    torch.manual_seed(seed)
    bank = BottleneckExperts(num_experts, H, B)
    with torch.no_grad():
        bank.up_proj.normal_(0, 0.3)  # trained-looking: W_up away from its zero init
    return bank


@pytest.mark.parametrize("backend", ["eager", "grouped"])
def test_bottleneck_bank_matches_a_per_expert_loop(backend):
    bank = random_bank(4)
    experts = torch.tensor([0, 0, 1, 3, 3, 3, 3])  # expert 2 gets no rows
    x = torch.randn(len(experts), H)
    groups = ExpertGroups.from_sorted_experts(experts, 4, backend)
    out = bank(x, groups)
    reference = torch.stack([naive_expert(bank, int(e), x[i]) for i, e in enumerate(experts)])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_shared_bank_sums_all_its_experts():
    bank = random_bank(3, seed=1)
    x = torch.randn(6, H)
    reference = torch.stack([sum(naive_expert(bank, e, x[t]) for e in range(3)) for t in range(6)])
    torch.testing.assert_close(bank.forward_all(x), reference, atol=1e-5, rtol=1e-5)


def test_fresh_bottleneck_outputs_zero_but_gets_a_gradient_on_w_up():
    bank = BottleneckExperts(3, H, B)
    assert torch.equal(bank.up_proj, torch.zeros(3, H, B))
    bound = 1 / math.sqrt(H)  # kaiming-uniform(a = sqrt 5), as nn.Linear / LoRA's A
    assert bank.down_proj.abs().max() <= bound and bank.down_proj.std() > bound / 3
    x = torch.randn(4, H)
    out = bank.forward_all(x)
    assert torch.equal(out, torch.zeros(4, H))
    (out * torch.randn_like(out)).sum().backward()
    assert bank.up_proj.grad.abs().sum() > 0 and torch.equal(bank.down_proj.grad, torch.zeros_like(bank.down_proj))


def test_bottleneck_is_a_registered_expert_kind_that_keeps_the_dense_ffn():
    dense = tiny_decoder("llama")
    ids = token_ids()
    with torch.no_grad():
        before = dense(ids).logits
    assert "bottleneck" in EXPERT_KINDS
    plan = UpcyclePlan(num_experts=4, num_experts_per_tok=2, expert_kind="bottleneck", shared_ffn="dense",
                       expert_options={"bottleneck_size": 6})
    model = upcycle(dense, plan)
    bank = model.model.layers[0].mlp.moe.experts
    assert isinstance(bank, BottleneckExperts) and tuple(bank.down_proj.shape) == (4, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, atol=0, rtol=0)  # zero adapters + the dense FFN
    with pytest.raises(ValueError, match="not options of expert kind 'bottleneck'"):
        upcycle(tiny_decoder("llama"), plan.replace(expert_options={"rank": 4}))


# ---------------------------------------------------------------- the MoME module
def naive_mome(module: MatryoshkaExperts, x: torch.Tensor) -> torch.Tensor:
    """y_t = sum_shared E_n(x_t) + sum_{n in top-k of softmax(W_r x_t)} p_n E_n(x_t), one token at a time."""
    rows = []
    for t in range(x.shape[0]):
        probs = torch.softmax(module.router.weight @ x[t], dim=0).detach()
        top = sorted(range(len(probs)), key=lambda e: (-float(probs[e]), e))[: module.router.top_k]
        weights = {e: float(probs[e]) for e in top}
        if module.router.normalize:
            total = sum(weights.values())
            weights = {e: w / total for e, w in weights.items()}
        y = sum(w * naive_expert(module.routed_experts, e, x[t]) for e, w in weights.items())
        if module.shared_experts is not None:
            y = y + sum(naive_expert(module.shared_experts, n, x[t]) for n in range(module.shared_experts.num_experts))
        rows.append(y)
    return torch.stack(rows)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("num_shared", [0, 2])
def test_mome_module_matches_a_per_token_loop(normalize, num_shared):
    torch.manual_seed(3)
    module = MatryoshkaExperts(hidden_size=H, num_routed_experts=7, num_shared_experts=num_shared, num_experts_per_tok=3,
                               bottleneck_size=B, normalize=normalize)
    with torch.no_grad():
        module.router.weight.normal_(0, 0.5)
        for bank in (module.routed_experts, module.shared_experts):
            if bank is not None:
                bank.up_proj.normal_(0, 0.3)
    x = torch.randn(2, 5, H)
    out, routing = module(x)
    torch.testing.assert_close(out.reshape(-1, H), naive_mome(module, x.reshape(-1, H)), atol=1e-5, rtol=1e-5)
    assert routing.indices.shape == (10, 3) and int(routing.expert_counts().sum()) == 30
    assert set(routing.aux_losses) >= {"load_balance"}
