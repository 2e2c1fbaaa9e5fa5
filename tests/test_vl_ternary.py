"""Ternary experts: quantisers against their formulas, 2-bit packing, the packed backend vs eager, int8 PTQ."""
import pytest
import torch

from zoo.core.dispatch import ExpertGroups, GROUPED_LINEAR_BACKENDS, eager_grouped_linear
from zoo.experts.ternary import Int8Linear, PackedTernary, TernaryGLUExperts, int8_activations_ste, pack_ternary, packed_ternary_linear, quantize_int8_, ternary_codes, ternary_ste, unpack_ternary


def test_absmean_ternary_matches_the_formula_elementwise():
    w = torch.randn(3, 4, 5)
    codes, scale = ternary_codes(w)
    for e in range(3):
        s = sum(abs(float(v)) for v in w[e].flatten()) / 20
        assert scale[e].item() == pytest.approx(s, rel=1e-5)
        for i in range(4):
            for j in range(5):
                assert int(codes[e, i, j]) == max(-1, min(1, round(float(w[e, i, j]) / s)))


def test_straight_through_estimators_pass_gradients_unchanged():
    w = torch.randn(2, 3, 4, requires_grad=True)
    ternary_ste(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))
    x = torch.randn(5, 8, requires_grad=True)
    q = int8_activations_ste(x)
    q.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    step = x.detach().abs().amax(-1, keepdim=True) / 127
    torch.testing.assert_close(q.detach(), (x.detach() / step).round() * step)


def test_pack_unpack_roundtrip_and_bits_per_weight():
    codes = torch.randint(-1, 2, (3, 7, 9), dtype=torch.int8)  # 63 weights: not a multiple of 4
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 16)
    for e in range(3):
        assert torch.equal(unpack_ternary(packed[e], (7, 9)), codes[e])
    big = torch.randint(-1, 2, (4, 64, 48), dtype=torch.int8)
    bits = PackedTernary(pack_ternary(big), torch.ones(4), (64, 48)).bits_per_weight()
    assert bits <= 2.1


def _groups(counts):
    row_experts = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return ExpertGroups.from_sorted_experts(row_experts, len(counts), "ternary_packed")


def test_packed_backend_matches_eager_and_unpacks_only_used_experts(monkeypatch):
    assert GROUPED_LINEAR_BACKENDS["ternary_packed"] is packed_ternary_linear
    codes = torch.randint(-1, 2, (4, 6, 5), dtype=torch.int8)
    scale = torch.rand(4) + 0.5
    weight = PackedTernary(pack_ternary(codes), scale, (6, 5))
    groups = _groups([3, 0, 2, 0])
    x = torch.randn(5, 5)
    dense = codes.float() * scale[:, None, None]
    calls = []
    original = PackedTernary.dequantize
    monkeypatch.setattr(PackedTernary, "dequantize", lambda self, e, dtype=torch.float32: calls.append(e) or original(self, e, dtype))
    torch.testing.assert_close(packed_ternary_linear(x, weight, None, groups), eager_grouped_linear(x, dense, None, groups))
    assert calls == [0, 2]


def test_ternary_bank_packed_equals_latent_and_is_2_bits():
    gate_up, down = torch.randn(128, 64), torch.randn(64, 64)
    bank = TernaryGLUExperts(3, gate_up, down)
    with torch.no_grad():
        bank.gate_up_proj.add_(0.3 * torch.randn_like(bank.gate_up_proj))  # experts differ
    x = torch.randn(7, 64)
    groups = _groups([3, 0, 4])
    with torch.no_grad():
        latent = bank(x, groups)
        bank.pack_()
        packed = bank(x, groups)
    torch.testing.assert_close(packed, latent, atol=1e-5, rtol=1e-5)
    assert bank.bits_per_weight() <= 2.1
    with pytest.raises(ValueError, match="ternary_packed"):
        bank(x, ExpertGroups.from_sorted_experts(groups.row_experts, 3, "eager"))


def test_int8_weight_only_ptq_is_close_and_swaps_by_name():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(10, 16)
    want = model(x)
    swapped = quantize_int8_(model, include=lambda name: name != "2")
    assert swapped == ["0"] and isinstance(model[0], Int8Linear) and type(model[2]) is torch.nn.Linear
    assert model[0].weight_int8.dtype == torch.int8
    torch.testing.assert_close(model(x), want, atol=0.05, rtol=0.05)


def test_ternary_expert_kind_quantises_base_plus_lora_delta_per_expert():
    from tiny_decoders import tiny_decoder

    from zoo.upcycling.plan import UpcyclePlan
    from zoo.upcycling.sparse_upcycling import upcycle

    plan = UpcyclePlan(num_experts=3, num_experts_per_tok=1, layers=[0], expert_kind="ternary", expert_options={"rank": 2})
    dense = tiny_decoder("llama").model.layers[0].mlp
    bank = upcycle(tiny_decoder("llama"), plan).model.layers[0].mlp.moe.experts
    assert isinstance(bank, TernaryGLUExperts) and not bank.gate_up_proj.requires_grad and bank.gate_up_lora_A.requires_grad
    with torch.no_grad():  # trained deltas
        bank.gate_up_lora_B.normal_(0, 0.5)
        bank.down_lora_B.normal_(0, 0.5)
    x = torch.randn(7, 32)
    groups = _groups([3, 0, 4])
    with torch.no_grad():
        got = bank(x, groups)

    def ternary(w):
        s = w.abs().mean()
        return (w / s).round().clamp(-1, 1) * s

    def fake_int8(v):
        step = v.abs().max() / 127
        return (v / step).round() * step

    gate_up = torch.cat([dense.gate_proj.weight, dense.up_proj.weight]).detach()
    for row, e in enumerate([0, 0, 0, 2, 2, 2, 2]):
        w_gu = ternary(gate_up + bank.gate_up_lora_B[e] @ bank.gate_up_lora_A[e])
        w_d = ternary(dense.down_proj.weight + bank.down_lora_B[e] @ bank.down_lora_A[e])
        g, u = (w_gu @ fake_int8(x[row])).chunk(2)
        torch.testing.assert_close(got[row], w_d @ fake_int8(torch.nn.functional.silu(g) * u), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(bank.pack_()(x, groups), got, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expert kind 'ternary' needs a gated"):
        upcycle(tiny_decoder("gpt2"), plan)


def test_int8_backend_is_the_fake_quantised_forward_in_integers():
    """ternary_int8 against the latent-weight (STE) forward of the same bank, in fp32: the same absmax rules,
    so only fp32 rounding differs; experts without rows are never touched; a packed bank refuses other backends."""
    from zoo.core.dispatch import GROUPED_LINEAR_BACKENDS
    from zoo.experts.ternary import Int8Ternary, int8_ternary_linear

    assert GROUPED_LINEAR_BACKENDS["ternary_int8"] is int8_ternary_linear
    torch.manual_seed(0)
    bank = TernaryGLUExperts(4, torch.randn(96, 40), torch.randn(40, 48))
    with torch.no_grad():
        bank.gate_up_proj.add_(0.3 * torch.randn_like(bank.gate_up_proj))
    x = torch.randn(9, 40)
    counts = [4, 0, 5, 0]
    row_experts = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    with torch.no_grad():
        latent = bank(x, ExpertGroups.from_sorted_experts(row_experts, 4, "eager"))
        bank.pack_()
        fast = bank(x, ExpertGroups.from_sorted_experts(row_experts, 4, "ternary_int8"))
        unpack = bank(x, ExpertGroups.from_sorted_experts(row_experts, 4, "ternary_packed"))
    torch.testing.assert_close(fast, latent, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast, unpack, atol=1e-4, rtol=1e-4)
    weight = bank.quantised("down_proj", "ternary_int8")
    assert isinstance(weight, Int8Ternary) and weight.codes.dtype == torch.int8 and weight.shape == (40, 48)
    with pytest.raises(ValueError, match="ternary_int8"):
        bank(x, ExpertGroups.from_sorted_experts(row_experts, 4, "grouped"))


def test_int8_codes_follow_a_state_dict_loaded_after_packing():
    """from_pretrained builds the packed bank, then loads the checkpoint into its buffers: the resident int8
    codes must be those of the loaded buffers, not of the init."""
    torch.manual_seed(0)
    first, second = (TernaryGLUExperts(2, torch.randn(32, 16), torch.randn(16, 16), packed=True) for _ in range(2))
    x = torch.randn(3, 16)
    groups = ExpertGroups.from_sorted_experts(torch.tensor([0, 1, 1]), 2, "ternary_int8")
    with torch.no_grad():
        before = second(x, groups)
        second.load_state_dict(first.state_dict())
        torch.testing.assert_close(second(x, groups), first(x, groups))
    assert not torch.allclose(before, first(x, groups))


def test_unpacked_bank_evaluates_on_the_int8_kernel_and_requantises_after_a_step():
    """No grad + ternary_int8 on a bank still in training form (the recipe's evaluations, generate): the codes
    are computed once and reused until the latent weights change; the result is the STE forward's."""
    torch.manual_seed(0)
    bank = TernaryGLUExperts(2, torch.randn(64, 32), torch.randn(32, 32), lora_rank=2)
    with torch.no_grad():
        bank.gate_up_lora_B.normal_(0, 0.5)
    x = torch.randn(5, 32)
    row_experts = torch.tensor([0, 0, 1, 1, 1])
    fast, eager = (ExpertGroups.from_sorted_experts(row_experts, 2, b) for b in ("ternary_int8", "eager"))
    with torch.no_grad():
        torch.testing.assert_close(bank(x, fast), bank(x, eager), atol=1e-4, rtol=1e-4)
        cached = bank.quantised("gate_up_proj", "ternary_int8").codes
        assert bank.quantised("gate_up_proj", "ternary_int8").codes is cached  # not recomputed
    optimizer = torch.optim.SGD([bank.gate_up_lora_A, bank.gate_up_lora_B], lr=10.0)
    bank(x, fast).square().sum().backward()  # with grad: the STE path, whatever the backend
    optimizer.step()
    with torch.no_grad():
        assert bank.quantised("gate_up_proj", "ternary_int8").codes is not cached
        torch.testing.assert_close(bank(x, fast), bank(x, eager), atol=1e-4, rtol=1e-4)
