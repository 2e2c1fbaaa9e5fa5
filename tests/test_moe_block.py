"""MoEBlock against a per-token loop reference (forward and gradients), on both dispatch backends.

The reference routes and computes one token at a time with plain tensor ops on copies of the
block's parameters; only the block under test comes from zoo."""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from zoo import GLUExperts, MLPExperts, MoEBlock, SharedExperts, TopKRouter, register_backend
from zoo.core.dispatch import eager_grouped_linear

pytestmark = pytest.mark.usefixtures("single_thread")

dispatch_module = importlib.import_module("zoo.core.dispatch")  # `zoo.core.dispatch` is also the function
BACKENDS = ["eager", "grouped"]
H, I, E = 12, 20, 6


# ---------------------------------------------------------------- the per-token loop reference
def ref_ranking(probs: list[float]) -> list[int]:
    order, left = [], list(range(len(probs)))
    while left:
        best = left[0]
        for e in left[1:]:
            if probs[e] > probs[best]:
                best = e
        order.append(best)
        left.remove(best)
    return order


def ref_glu_expert(params, e, x):  # SwiGLU, gate rows first in gate_up_proj
    gate_up, down = params["gate_up_proj"], params["down_proj"]
    inter = down.shape[-1]
    gate = gate_up[e, :inter] @ x
    up = gate_up[e, inter:] @ x
    return down[e] @ (gate * torch.sigmoid(gate) * up)


def ref_mlp_expert(params, e, x):  # exact-erf GELU, with biases
    pre = params["up_proj"][e] @ x + params["up_proj_bias"][e]
    h = 0.5 * pre * (1 + torch.erf(pre / math.sqrt(2)))
    return params["down_proj"][e] @ h + params["down_proj_bias"][e]


def ref_moe(x, params, top_k, bank_experts, expert_fn, expert_mask=None, shared=None):
    """x [T, H] -> [T, H], one token at a time."""
    rows = []
    for t in range(x.shape[0]):
        logits = params["router"] @ x[t]  # [E]
        if expert_mask is not None:
            logits = logits.masked_fill(~expert_mask[t], float("-inf"))
        probs = torch.softmax(logits, dim=0)
        chosen = [e for e in ref_ranking(probs.tolist())[:top_k] if probs[e] > 0]
        total = sum(probs[e] for e in chosen)
        y = torch.zeros(x.shape[1], dtype=x.dtype)
        for e in chosen:
            if e < bank_experts:  # higher indices are null experts: no output
                y = y + probs[e] / total * expert_fn(params, e, x[t])
        if shared is not None:
            s = shared["gate_proj"] @ x[t]
            dense = shared["down_proj"] @ (s * torch.sigmoid(s) * (shared["up_proj"] @ x[t]))
            y = y + torch.sigmoid(shared["gate"] @ x[t]) * dense
        rows.append(y)
    return torch.stack(rows) if rows else x.new_zeros(0, x.shape[1])


# ---------------------------------------------------------------- helpers
def make_block(bank="glu", num_experts=E, bank_experts=E, top_k=2, backend="eager", shared=False, seed=0,
               hidden=H, inter=I):
    torch.manual_seed(seed)
    router = TopKRouter(hidden, num_experts, top_k)
    experts = GLUExperts(bank_experts, hidden, inter) if bank == "glu" else MLPExperts(bank_experts, hidden, inter)
    shared_experts = SharedExperts(hidden, 16, gated=True) if shared else None
    block = MoEBlock(router, experts, shared_experts, dispatch_backend=backend)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        router.weight.normal_(0, 1.0)  # decisive routing
    return block


def ref_params(block):
    """Independent leaf copies of the block's parameters for the reference."""
    p = {"router": block.router.weight}
    for name, value in block.experts.named_parameters():
        p[name] = value
    shared = None
    if block.shared_experts is not None:
        ffn = block.shared_experts.ffn
        shared = {"gate_proj": ffn.gate_proj.weight, "up_proj": ffn.up_proj.weight, "down_proj": ffn.down_proj.weight,
                  "gate": block.shared_experts.gate.weight[0]}
    p = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    if shared is not None:
        shared = {k: v.detach().clone().requires_grad_() for k, v in shared.items()}
    return p, shared


def check_against_reference(block, x, expert_mask=None, atol=1e-5):
    """Forward and gradients (input, router, expert weights, shared) of block vs the loop reference."""
    bank_fn = ref_glu_expert if isinstance(block.experts, GLUExperts) else ref_mlp_expert
    params, shared = ref_params(block)
    x_ref = x.detach().clone().reshape(-1, H).requires_grad_()
    x_blk = x.detach().clone().requires_grad_()
    mask_rows = None
    if expert_mask is not None:
        mask_rows = expert_mask.expand(x_ref.shape[0], -1) if expert_mask.dim() == 1 else expert_mask.reshape(-1, expert_mask.shape[-1])
    want = ref_moe(x_ref, params, block.router.top_k, block.experts.num_experts, bank_fn, mask_rows, shared)
    got, routing = block(x_blk, expert_mask=expert_mask)
    assert got.shape == x.shape
    torch.testing.assert_close(got.reshape(-1, H), want, atol=atol, rtol=1e-4)

    upstream = torch.randn_like(want)
    (want * upstream).sum().backward()
    (got.reshape(-1, H) * upstream).sum().backward()
    torch.testing.assert_close(x_blk.grad.reshape(-1, H), x_ref.grad, atol=atol * 10, rtol=1e-4)
    torch.testing.assert_close(block.router.weight.grad, params["router"].grad, atol=atol * 10, rtol=1e-4)
    for name, value in block.experts.named_parameters():
        torch.testing.assert_close(value.grad, params[name].grad, atol=atol * 10, rtol=1e-4, msg=name)
    if shared is not None:
        ffn = block.shared_experts.ffn
        torch.testing.assert_close(ffn.gate_proj.weight.grad, shared["gate_proj"].grad, atol=atol * 10, rtol=1e-4)
        torch.testing.assert_close(block.shared_experts.gate.weight.grad[0], shared["gate"].grad, atol=atol * 10, rtol=1e-4)
    return routing


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bank", ["glu", "mlp"])
@pytest.mark.parametrize("shape", [(2, 7), (11,)], ids=["BSH", "TH"])
def test_matches_loop_reference(backend, bank, shape):
    block = make_block(bank, backend=backend)
    x = torch.randn(*shape, H)
    routing = check_against_reference(block, x)
    assert routing.indices.shape == (math.prod(shape), 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_experts_get_nothing_and_zero_grad(backend):
    block = make_block(backend=backend, top_k=2)
    x = torch.randn(9, H)
    allowed = torch.tensor([True, False, True, True, False, True])  # experts 1 and 4 never chosen
    routing = check_against_reference(block, x, expert_mask=allowed)
    assert routing.expert_counts()[[1, 4]].tolist() == [0, 0]
    assert block.experts.gate_up_proj.grad[[1, 4]].abs().sum() == 0
    assert block.experts.down_proj.grad[[1, 4]].abs().sum() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token(backend):
    check_against_reference(make_block(backend=backend, top_k=3), torch.randn(1, H))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_zero_tokens(backend, shape):
    block = make_block(backend=backend)
    x = torch.randn(*shape, H, requires_grad=True)
    out, routing = block(x)
    assert out.shape == x.shape and routing.indices.shape == (0, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape
    with torch.no_grad():
        assert block(x)[0].shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_null_experts_add_nothing(backend):
    block = make_block(num_experts=8, bank_experts=5, top_k=3, backend=backend)
    x = torch.randn(16, H)
    routing = check_against_reference(block, x)
    assert (routing.indices[routing.mask] >= 5).any(), "test needs tokens routed to a null expert"
    assert block.num_null_experts == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_experts(backend):
    check_against_reference(make_block(backend=backend, shared=True), torch.randn(2, 5, H))


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_expert_mask(backend):
    block = make_block(backend=backend)
    x = torch.randn(2, 4, H)
    per_sample = torch.tensor([[True, True, False, False, True, True], [False, True, True, True, False, False]])
    out, routing = block(x, expert_mask=per_sample)
    full = per_sample[:, None, :].expand(2, 4, E)
    check_against_reference(make_block(backend=backend), x, expert_mask=full)
    torch.testing.assert_close(out, block(x, expert_mask=full)[0])
    used = routing.indices[routing.mask].view(-1)
    assert set(routing.indices[:4][routing.mask[:4]].tolist()) <= {0, 1, 4, 5}
    assert set(routing.indices[4:][routing.mask[4:]].tolist()) <= {1, 2, 3}
    assert used.numel() == 16


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_chunks_match_training_path(backend, monkeypatch):
    """Without autograd, dispatch feeds the bank a few experts at a time; same numbers."""
    block = make_block(num_experts=8, bank_experts=8, top_k=2, backend=backend)
    x = torch.randn(40, H)
    with_grad, _ = block(x)
    monkeypatch.setattr(dispatch_module, "INFERENCE_CHUNK_ROWS", 7)
    with torch.no_grad():
        chunked, _ = block(x)
    torch.testing.assert_close(chunked, with_grad.detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hidden,inter", [(16, 32), (12, 20)], ids=["aligned", "unaligned"])
def test_backends_agree_in_bf16(hidden, inter, monkeypatch):
    """bf16 rows of 16 and 32 values fit grouped_mm's 16-byte rule; 12 and 20 fall back to the loop."""
    block = make_block(num_experts=8, bank_experts=8, top_k=2, hidden=hidden, inter=inter).to(torch.bfloat16)
    x = torch.randn(3, 10, hidden, dtype=torch.bfloat16, requires_grad=True)
    grouped_calls = []
    real_grouped_mm = torch.nn.functional.grouped_mm
    monkeypatch.setattr(torch.nn.functional, "grouped_mm", lambda *a, **k: grouped_calls.append(1) or real_grouped_mm(*a, **k))
    outs, grads = [], []
    for backend in BACKENDS:
        block.dispatch_backend = backend
        block.zero_grad()
        x.grad = None
        out, routing = block(x)
        assert out.dtype == torch.bfloat16 and routing.logits.dtype == torch.float32
        out.float().square().sum().backward()
        outs.append(out)
        grads.append((x.grad.clone(), block.experts.gate_up_proj.grad.clone()))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=2e-2, rtol=2e-2)
    assert bool(grouped_calls) == (hidden == 16)
    # and both are the fp32 computation up to bf16 rounding
    block32 = make_block(num_experts=8, bank_experts=8, top_k=2, hidden=hidden, inter=inter)
    block32.load_state_dict({k: v.float() for k, v in block.state_dict().items()})
    torch.testing.assert_close(outs[0].float(), block32(x.detach().float())[0], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("null", [0, 2])
def test_no_expert_computes_a_token_it_was_not_given(grad, null, monkeypatch):
    """A recording backend sees exactly the routed tokens' rows per expert, nothing else."""
    calls = []

    def recording(x, weight, bias, groups):
        calls.append((weight, x.detach().clone(), groups.counts.clone(), groups.offsets.clone()))
        return eager_grouped_linear(x, weight, bias, groups)

    monkeypatch.setitem(dispatch_module.GROUPED_LINEAR_BACKENDS, "recording", None)
    register_backend("recording", recording)
    monkeypatch.setattr(dispatch_module, "INFERENCE_CHUNK_ROWS", 5)
    block = make_block(num_experts=6 + null, bank_experts=6, top_k=2, backend="recording")
    x = torch.randn(3, 6, H)
    with torch.set_grad_enabled(grad):
        _, routing = block(x)
    flat = x.reshape(-1, H)
    seen = {e: [] for e in range(6)}
    for weight, rows, counts, offsets in calls:
        if weight is not block.experts.gate_up_proj:
            continue  # the down projection sees activations, not tokens
        assert offsets[-1] == rows.shape[0]
        start = 0
        for e, c in enumerate(counts.tolist()):
            seen[e] += rows[start : start + c].tolist()
            start += c
    for e in range(6):
        given = [flat[t].tolist() for t in range(flat.shape[0])
                 if any(int(i) == e and bool(m) for i, m in zip(routing.indices[t], routing.mask[t]))]
        assert sorted(seen[e]) == sorted(given), f"expert {e}"
    assert sum(len(v) for v in seen.values()) == int((routing.mask & (routing.indices < 6)).sum())
    if not grad:
        assert len([c for c in calls if c[0] is block.experts.gate_up_proj]) > 1  # really chunked
