"""Uni-MoE's routing pieces in the core: the modality L1 and KL losses on hand-computed examples, and LoRA
experts whose frozen FFN differs per expert (against a naive per-token loop), next to the shared one."""
import math

import pytest
import torch

from zoo.core.dispatch import ExpertGroups
from zoo.core.losses import kl_divergence, modality_expert_l1_loss, modality_kl_separation_loss
from zoo.core.modalities import MODALITY_IDS
from zoo.experts.ffn_weights import FFNWeights
from zoo.experts.lora import LoRAExperts, build_lora_experts
from zoo.upcycling.plan import UpcyclePlan

pytestmark = pytest.mark.usefixtures("single_thread")
TEXT, IMAGE, AUDIO = MODALITY_IDS["text"], MODALITY_IDS["image"], MODALITY_IDS["audio"]


def test_modality_l1_loss_by_hand():
    # one sequence: text, image, image, audio; image -> expert 0, audio -> expert 1 (E = 2)
    probs = torch.tensor([[[0.5, 0.5], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]])
    ids = torch.tensor([[TEXT, IMAGE, IMAGE, AUDIO]])
    designated = {IMAGE: [0], AUDIO: [1]}
    # image: |0.8-1|,|0.2-0|,|0.6-1|,|0.4-0| -> mean 0.3, weight 2/4; audio: |0.3|,|0.7-1| -> 0.3, weight 1/4
    assert modality_expert_l1_loss(probs, ids, designated).item() == pytest.approx(0.5 * 0.3 + 0.25 * 0.3)
    # tokens sent to their experts exactly: zero
    exact = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert modality_expert_l1_loss(exact, ids, designated).item() == 0.0
    # padding leaves the last token (audio) out: image weight 2/3 and no audio term
    padding = torch.tensor([[True, True, True, False]])
    assert modality_expert_l1_loss(probs, ids, designated, padding).item() == pytest.approx(2 / 3 * 0.3)
    # a gradient step moves image tokens towards expert 0
    logits = torch.zeros(1, 4, 2, requires_grad=True)
    modality_expert_l1_loss(torch.softmax(logits, -1), ids, designated).backward()
    assert logits.grad[0, 1, 0] < 0 < logits.grad[0, 1, 1] and logits.grad[0, 0].abs().max() == 0  # text: untouched


def test_modality_l1_loss_is_the_mean_over_sequences():
    probs = torch.tensor([[[0.8, 0.2], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
    ids = torch.tensor([[IMAGE, TEXT], [TEXT, TEXT]])
    # sequence 0: image weight 1/2, mean |.| = 0.2; sequence 1 has no image token: 0
    assert modality_expert_l1_loss(probs, ids, {IMAGE: [0]}).item() == pytest.approx((0.5 * 0.2 + 0) / 2)


def test_modality_kl_loss_by_hand():
    ids = torch.tensor([[TEXT, TEXT, IMAGE, IMAGE]])
    p_text, p_image = torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])
    probs = torch.stack([p_text, p_text, p_image, p_image])[None]
    kl = 0.9 * math.log(0.9 / 0.2) + 0.1 * math.log(0.1 / 0.8)
    assert modality_kl_separation_loss(probs, ids).item() == pytest.approx(1 - kl, rel=1e-5)
    assert kl_divergence(p_text, p_image).item() == pytest.approx(kl, rel=1e-5)
    # identical routing: the maximum, 1; one modality alone: nothing to separate, 0
    same = torch.full((1, 4, 2), 0.5)
    assert modality_kl_separation_loss(same, ids).item() == pytest.approx(1.0)
    assert modality_kl_separation_loss(same, torch.zeros(1, 4, dtype=torch.long)).item() == 0.0
    # three modalities: the mean over the three pairs, in id order (KL(text||image), KL(text||audio), KL(image||audio))
    p_audio = torch.tensor([0.5, 0.5])
    three = torch.stack([p_text, p_image, p_audio])[None]
    pairs = [(p_text, p_image), (p_text, p_audio), (p_image, p_audio)]
    want = sum(1 - kl_divergence(a, b).item() for a, b in pairs) / 3
    got = modality_kl_separation_loss(three, torch.tensor([[TEXT, IMAGE, AUDIO]])).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_modality_losses_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"modality_ids \[B, S\]"):
        modality_expert_l1_loss(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), {1: [0]})
    with pytest.raises(ValueError, match="padding_mask must have shape"):
        modality_kl_separation_loss(torch.rand(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(3, dtype=torch.bool))


def ffn(seed, hidden=8, inter=12):
    g = torch.Generator().manual_seed(seed)
    return FFNWeights(up=torch.randn(inter, hidden, generator=g), gate=torch.randn(inter, hidden, generator=g),
                      down=torch.randn(hidden, inter, generator=g), act="silu")


def naive(bank: LoRAExperts, sources, x, experts):
    """Per token: expert e's own FFN weights + s * B_e A_e, the SwiGLU FFN."""
    rows = []
    for token, e in zip(x, experts.tolist()):
        src = sources[e]
        w_gu = torch.cat([src.gate, src.up]) + bank.scaling * bank.gate_up_lora_B[e] @ bank.gate_up_lora_A[e]
        w_d = src.down + bank.scaling * bank.down_lora_B[e] @ bank.down_lora_A[e]
        gate, up = (w_gu @ token).chunk(2)
        rows.append(w_d @ (torch.nn.functional.silu(gate) * up))
    return torch.stack(rows)


@pytest.mark.parametrize("backend", ["eager", "grouped"])
def test_lora_experts_on_different_frozen_ffns_match_a_naive_reference(backend):
    sources = [ffn(0), ffn(1), ffn(2)]
    plan = UpcyclePlan(num_experts=3, num_experts_per_tok=1, expert_kind="lora", expert_options={"rank": 2, "alpha": 4})
    bank = build_lora_experts(sources, plan)  # parts that differ: one frozen FFN per expert
    assert bank.per_expert_base and bank.gate_up_proj.shape == (3, 24, 8) and not bank.gate_up_proj.requires_grad
    with torch.no_grad():
        bank.gate_up_lora_B.normal_()
        bank.down_lora_B.normal_()
    experts = torch.tensor([0, 1, 1, 2, 2, 2])
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))
    groups = ExpertGroups.from_sorted_experts(experts, 3, backend=backend)
    torch.testing.assert_close(bank(x, groups), naive(bank, sources, x, experts), atol=1e-4, rtol=1e-4)


def test_a_shared_source_keeps_one_frozen_ffn_and_per_expert_base_can_be_asked_for():
    source = ffn(0)
    plan = UpcyclePlan(num_experts=2, num_experts_per_tok=1, expert_kind="lora", expert_options={"rank": 2})
    shared = build_lora_experts([source] * 2, plan)
    assert not shared.per_expert_base and shared.gate_up_proj.shape == (24, 8)
    copies = build_lora_experts([source] * 2, plan.replace(expert_options={"rank": 2, "per_expert_base": True}))
    assert copies.per_expert_base and torch.equal(copies.gate_up_proj[0], shared.gate_up_proj)
    x = torch.randn(4, 8)
    groups = ExpertGroups.from_sorted_experts(torch.tensor([0, 0, 1, 1]), 2, backend="eager")
    torch.testing.assert_close(copies(x, groups), shared(x, groups))  # B = 0: both are the source FFN
    with pytest.raises(ValueError, match="load_expert_ffn needs per_expert_base=True"):
        shared.load_expert_ffn(0, source)
    with pytest.raises(ValueError, match=r"expert 1 gate_up_proj: the source FFN gives shape \(12, 8\)"):
        copies.load_expert_ffn(1, FFNWeights(up=torch.zeros(6, 8), gate=torch.zeros(6, 8), down=torch.zeros(8, 6),
                                             act="silu"))  # a narrower FFN (I = 6) than the bank's (12)
    with pytest.raises(ValueError, match=r"LoRAExperts\.per_expert_base must be True or False"):
        LoRAExperts(2, 8, 12, per_expert_base="yes")
