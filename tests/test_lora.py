"""zoo.integrations.peft_presets (PEFT presets for upcycled models) and the Uni-MoE LoRA expert kind."""
import peft
import pytest
import torch
from tiny_decoders import tiny_decoder, token_ids
from transformers import AutoModelForCausalLM

import zoo  # noqa: F401
from zoo.core.dispatch import ExpertGroups
from zoo.integrations.peft_presets import lora_config
from zoo.experts.lora import LoRAExperts
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.upcycling.plan import PLANS, UpcyclePlan
from zoo.upcycling.sparse_upcycling import upcycle


def train_steps(model, ids, steps=3):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_lora_preset_trains_saves_reloads_and_merges(tmp_path):
    UpcycledMoeForCausalLM.from_dense(tiny_decoder(), "top2-of-4").save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    config = lora_config(model, "attention+experts", r=4)
    assert set(config.target_parameters) == {"mlp.moe.experts.gate_up_proj", "mlp.moe.experts.down_proj"}
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"} and config.modules_to_save == ["router"]
    ids = token_ids()
    tuned = peft.get_peft_model(model, config)
    router_before = model.model.model.layers[0].mlp.moe.router.weight.detach().clone()
    before = tuned(ids).logits.detach()
    train_steps(tuned, ids)
    trained = tuned(ids).logits.detach()
    assert (trained - before).abs().max() > 1e-2
    tuned.save_pretrained(tmp_path / "adapter")

    fresh = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(ids).logits, trained, atol=1e-6, rtol=0)
    merged = reloaded.merge_and_unload()
    assert type(merged) is UpcycledMoeForCausalLM
    torch.testing.assert_close(merged(ids).logits, trained, atol=1e-4, rtol=0)
    router_after = merged.model.model.layers[0].mlp.moe.router.weight
    assert (router_after - router_before).abs().max() > 1e-4  # the router trained fully (modules_to_save)


def test_lora_presets_and_errors():
    model = upcycle(tiny_decoder("phi3"), "moe_llava")
    assert set(lora_config(model, "attention").target_modules) == {"qkv_proj", "o_proj"}
    assert lora_config(model, "attention").target_parameters is None
    assert set(lora_config(model, "all").target_modules) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    with pytest.raises(ValueError, match="unknown LoRA preset 'mlp'"):
        lora_config(model, "mlp")
    with pytest.raises(ValueError, match="no upcycled MoE layers"):
        lora_config(tiny_decoder(), "attention")
    with pytest.raises(ValueError, match="lora_dropout must be 0"):
        lora_config(model, lora_dropout=0.1)
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        lora_config(upcycle(tiny_decoder("gpt2"), "top2-of-4"), "attention+experts")
    gpt2 = upcycle(tiny_decoder("gpt2"), "top2-of-4")
    assert set(lora_config(gpt2, "experts").target_parameters) == {"mlp.moe.experts.up_proj", "mlp.moe.experts.down_proj"}


def test_systems_with_their_own_lora_targets_reach_only_the_language_model():
    """MoME declares lora_targets: the attention regex matches the LLM's projections, not the Whisper tower's."""
    import re

    from tests.tiny_systems import built

    model = built("mome")
    config = lora_config(model, "attention")
    adapted = [n for n, _ in model.named_modules() if re.fullmatch(config.target_modules, n)]
    assert adapted and all(n.startswith("language_model.") for n in adapted)
    assert any(n.startswith("audio_tower.") and n.endswith("q_proj") for n, _ in model.named_modules())
    assert config.modules_to_save == ["mome", "audio_projectors"] and config.target_parameters is None
    with pytest.raises(ValueError, match="experts are new and trained fully"):
        lora_config(model, "experts")
    with pytest.raises(ValueError, match="adapts the dense FFNs of an upcycled decoder"):
        lora_config(model, "all")


def naive_lora_experts(bank: LoRAExperts, x, experts):
    """Per token: materialise W + s * B_e A_e for its expert, run the SwiGLU FFN."""
    rows = []
    for token, e in zip(x, experts.tolist()):
        w_gu = bank.gate_up_proj + bank.scaling * bank.gate_up_lora_B[e] @ bank.gate_up_lora_A[e]
        w_d = bank.down_proj + bank.scaling * bank.down_lora_B[e] @ bank.down_lora_A[e]
        gate, up = (w_gu @ token).chunk(2)
        rows.append(w_d @ (torch.nn.functional.silu(gate) * up))
    return torch.stack(rows)


def test_lora_experts_match_a_naive_reference():
    torch.manual_seed(0)
    bank = LoRAExperts(num_experts=3, hidden_size=8, intermediate_size=12, rank=2, alpha=4)
    with torch.no_grad():  # non-zero deltas so every expert differs
        bank.gate_up_lora_B.normal_()
        bank.down_lora_B.normal_()
    experts = torch.tensor([0, 0, 1, 2, 2, 2])  # rows sorted by expert
    x = torch.randn(6, 8)
    groups = ExpertGroups.from_sorted_experts(experts, 3, backend="eager")
    torch.testing.assert_close(bank(x, groups), naive_lora_experts(bank, x, experts), atol=1e-5, rtol=1e-5)
    grouped = ExpertGroups.from_sorted_experts(experts, 3, backend="grouped")
    torch.testing.assert_close(bank(x, grouped), naive_lora_experts(bank, x, experts), atol=1e-5, rtol=1e-5)


def test_uni_moe_lora_experts_upcycle_preserve_and_train_only_deltas(tmp_path):
    dense = tiny_decoder()
    ids = token_ids()
    reference = dense(ids).logits
    plan = PLANS["top2-of-4"].replace(expert_kind="lora", expert_options={"rank": 4, "alpha": 8})
    model = UpcycledMoeForCausalLM.from_dense(dense, plan)
    torch.testing.assert_close(model(ids).logits, reference, atol=1e-5, rtol=0)  # B = 0: every expert = dense FFN
    bank = model.model.model.layers[0].mlp.moe.experts
    assert isinstance(bank, LoRAExperts) and not bank.gate_up_proj.requires_grad and bank.gate_up_lora_B.requires_grad
    frozen = bank.gate_up_proj.detach().clone()
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in model.named_parameters():
        if "lora_" in name or "router" in name:
            p.requires_grad_(True)
    train_steps(model, ids)
    assert torch.equal(bank.gate_up_proj, frozen) and bank.gate_up_lora_B.abs().max() > 0
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expert kind 'lora'.*experts='copy'"):
        upcycle(tiny_decoder(), PLANS["xmoe"].replace(expert_kind="lora"))
    with pytest.raises(ValueError, match="expert_options.*'rnk'"):
        upcycle(tiny_decoder(), UpcyclePlan(expert_kind="lora", expert_options={"rnk": 4}))
