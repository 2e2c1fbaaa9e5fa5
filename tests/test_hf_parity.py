"""MoEBlock(TopKRouter + GLUExperts) against transformers' own sparse MoE blocks, same weights."""
from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig, Qwen3MoeConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

from zoo import GLUExperts, MoEBlock, TopKRouter

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN, INTER, EXPERTS, TOP_K = 16, 32, 6, 2


def randomize(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
        module.gate.weight.normal_(0, 1.0)  # decisive routing, no near-ties
    return module


def zoo_copy(hf_block, normalize: bool, backend: str) -> MoEBlock:
    block = MoEBlock(TopKRouter(HIDDEN, EXPERTS, TOP_K, normalize=normalize), GLUExperts(EXPERTS, HIDDEN, INTER),
                     dispatch_backend=backend)
    # identical layouts: router [E, H], gate_up_proj [E, 2I, H], down_proj [E, H, I]
    missing = block.load_state_dict(
        {"router.weight": hf_block.gate.weight, "experts.gate_up_proj": hf_block.experts.gate_up_proj,
         "experts.down_proj": hf_block.experts.down_proj}
    )
    assert not missing.missing_keys and not missing.unexpected_keys
    return block


def check_parity(hf_block, normalize, backend, hf_impl):
    hf_block.experts.config._experts_implementation = hf_impl  # the config object the experts dispatch on
    block = zoo_copy(hf_block, normalize, backend)
    x = torch.randn(3, 9, HIDDEN)
    x_hf, x_zoo = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = hf_block(x_hf)
    want_logits = hf_block.gate(x.reshape(-1, HIDDEN))[0]
    got, routing = block(x_zoo)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(routing.logits, want_logits, atol=1e-6, rtol=1e-6)
    upstream = torch.randn_like(want)
    (want * upstream).sum().backward()
    (got * upstream).sum().backward()
    torch.testing.assert_close(x_zoo.grad, x_hf.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block.experts.gate_up_proj.grad, hf_block.experts.gate_up_proj.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(block.router.weight.grad, hf_block.gate.weight.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hf_impl", ["eager", "grouped_mm"])
@pytest.mark.parametrize("backend", ["eager", "grouped"])
def test_matches_mixtral_sparse_moe_block(backend, hf_impl):
    config = MixtralConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_local_experts=EXPERTS,
                           num_experts_per_tok=TOP_K)
    check_parity(randomize(MixtralSparseMoeBlock(config)), normalize=True, backend=backend, hf_impl=hf_impl)


@pytest.mark.parametrize("norm_topk_prob", [False, True])
@pytest.mark.parametrize("backend", ["eager", "grouped"])
def test_matches_qwen3_moe_sparse_moe_block(backend, norm_topk_prob):
    config = Qwen3MoeConfig(hidden_size=HIDDEN, moe_intermediate_size=INTER, num_experts=EXPERTS,
                            num_experts_per_tok=TOP_K, norm_topk_prob=norm_topk_prob)
    check_parity(randomize(Qwen3MoeSparseMoeBlock(config)), normalize=norm_topk_prob, backend=backend, hf_impl="eager")
