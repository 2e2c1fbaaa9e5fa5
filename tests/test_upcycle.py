"""zoo.upcycling: plans, architecture adapters, function preservation at step 0, routing context."""
import pytest
import torch
from tiny_decoders import ARCHITECTURES, tiny_decoder, token_ids

import zoo
from zoo.core.expert_banks import GLUExperts, MLPExperts
from zoo.core.routing import ThresholdRouter, TopKRouter
from zoo.upcycling.layer import UpcycledFFN, upcycled_layers
from zoo.upcycling.plan import PLANS, UpcyclePlan
from zoo.upcycling.sparse_upcycling import routing_context, upcycle


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_copied_experts_with_renormalised_top_k_compute_the_dense_model(arch):
    dense = tiny_decoder(arch)
    ids = token_ids()
    reference = logits(dense, ids)
    upcycle(dense, PLANS["top2-of-4"].replace(init_noise=0.0))
    assert len(upcycled_layers(dense)) == 4
    torch.testing.assert_close(logits(dense, ids), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_split_experts_with_threshold_one_compute_the_dense_model(arch):
    dense = tiny_decoder(arch)
    ids = token_ids()
    reference = logits(dense, ids)
    upcycle(dense, PLANS["xmoe"].replace(threshold=1.0, num_experts=4))
    torch.testing.assert_close(logits(dense, ids), reference, atol=1e-5, rtol=0)


def test_preservation_tests_are_sensitive():
    """Raw (unnormalised) top-2 probabilities or a non-uniform split router change the function:
    the 1e-5 tolerance above is far below what a wrong upcycling costs."""
    ids = token_ids()
    reference = logits(tiny_decoder(), ids)
    raw = upcycle(tiny_decoder(), PLANS["top2-of-4"].replace(normalize=False))
    assert (logits(raw, ids) - reference).abs().max() > 1e-2
    split = upcycle(tiny_decoder(), PLANS["xmoe"].replace(threshold=1.0, router_init="normal", router_init_std=1.0))
    assert (logits(split, ids) - reference).abs().max() > 1e-2


def test_new_experts_and_routers_are_trainable_even_from_a_frozen_dense_model():
    dense = tiny_decoder().requires_grad_(False)
    upcycle(dense, PLANS["top2-of-4"])
    moe = dense.model.layers[0].mlp.moe
    assert all(p.requires_grad for p in moe.parameters())


def test_split_experts_partition_the_hidden_units():
    dense = tiny_decoder("llama")
    mlp = dense.model.layers[0].mlp
    gate, up, down = mlp.gate_proj.weight.clone(), mlp.up_proj.weight.clone(), mlp.down_proj.weight.clone()
    upcycle(dense, PLANS["xmoe"].replace(num_experts=4))
    experts = dense.model.layers[0].mlp.moe.experts
    assert isinstance(experts, GLUExperts) and experts.intermediate_size == 16
    for e in range(4):
        rows = slice(16 * e, 16 * (e + 1))
        torch.testing.assert_close(experts.gate_up_proj[e], torch.cat([gate[rows], up[rows]]))
        torch.testing.assert_close(experts.down_proj[e], 4 * down[:, rows])  # expert_scale = E


def test_gpt2_experts_are_biased_mlps_from_conv1d():
    dense = tiny_decoder("gpt2")
    c_fc = dense.transformer.h[1].mlp.c_fc
    weight, bias = c_fc.weight.clone(), c_fc.bias.clone()
    upcycle(dense, PLANS["top2-of-4"])
    experts = dense.transformer.h[1].mlp.moe.experts
    assert isinstance(experts, MLPExperts)
    torch.testing.assert_close(experts.up_proj[3], weight.t())  # Conv1D stores [in, out]
    torch.testing.assert_close(experts.up_proj_bias[3], bias)


@pytest.mark.parametrize("layers, expected", [
    ("all", [0, 1, 2, 3]), ("even", [0, 2]), ("odd", [1, 3]), (3, [0, 3]), ([1, 2], [1, 2]),
])
def test_layer_choice(layers, expected):
    model = upcycle(tiny_decoder(), UpcyclePlan(layers=layers))
    chosen = [i for i, layer in enumerate(model.model.layers) if isinstance(layer.mlp, UpcycledFFN)]
    assert chosen == expected


def test_plan_validation_names_the_field():
    for kwargs, field in [
        (dict(num_experts=0), "num_experts"), (dict(router="hash"), "router"), (dict(layers="first"), "layers"),
        (dict(layers=[-1]), "layers"), (dict(experts="clone"), "experts"), (dict(expert_kind="nope"), "expert_kind"),
        (dict(num_experts_per_tok=5), "num_experts_per_tok"), (dict(threshold=0.0), "threshold"),
        (dict(router="modality"), "modality_experts"), (dict(shared_ffn="new"), "shared_ffn"),
    ]:
        with pytest.raises(ValueError, match=field):
            UpcyclePlan(**kwargs)
    with pytest.raises(ValueError, match="unknown UpcyclePlan fields"):
        UpcyclePlan.from_dict({"top_k": 2})
    assert UpcyclePlan.from_dict(PLANS["moe_llava"].to_dict()) == PLANS["moe_llava"]


def test_unknown_architecture_lists_supported_ones():
    import transformers as T

    model = T.OPTForCausalLM(T.OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32))
    with pytest.raises(ValueError, match=r"cannot upcycle architecture 'opt'.*gpt2.*llama.*phi3"):
        upcycle(model, PLANS["top2-of-4"])


def test_unknown_plan_and_layer_out_of_range():
    with pytest.raises(ValueError, match="unknown upcycling plan 'top3'.*top2-of-4"):
        upcycle(tiny_decoder(), "top3")
    with pytest.raises(ValueError, match=r"layers \[7\] are outside the model's 4 layers"):
        upcycle(tiny_decoder(), UpcyclePlan(layers=[1, 7]))


def test_ffn_shapes_that_do_not_match_the_config_are_rejected():
    model = tiny_decoder()
    model.config.intermediate_size = 48  # a checkpoint whose FFN weights disagree with its config
    with pytest.raises(ValueError, match=r"layer 0 FFN up weight has shape \(64, 32\).*intermediate_size=48"):
        upcycle(model, PLANS["top2-of-4"])


def test_split_needs_divisible_intermediate_size():
    with pytest.raises(ValueError, match="divisible by num_experts"):
        upcycle(tiny_decoder(), PLANS["xmoe"].replace(num_experts=5))


def test_upcycling_twice_is_an_error():
    model = upcycle(tiny_decoder(), "top2-of-4")
    with pytest.raises(ValueError, match="already upcycled"):
        upcycle(model, "top2-of-4")


def test_routers_and_presets():
    model = upcycle(tiny_decoder(), "xmoe")
    router = model.model.layers[0].mlp.moe.router
    assert isinstance(router, ThresholdRouter) and router.threshold == 0.9
    assert torch.count_nonzero(router.weight) == 0  # uniform probabilities at step 0
    llava = upcycle(tiny_decoder(), "moe_llava")
    assert [isinstance(l.mlp, UpcycledFFN) for l in llava.model.layers] == [True, False, True, False]
    top = llava.model.layers[0].mlp.moe.router
    assert isinstance(top, TopKRouter) and top.top_k == 2 and top.num_experts == 4
    assert PLANS["moe_llava"].router_aux_loss_coef == 0.01


def test_init_noise_makes_copies_differ_and_seed_reproduces():
    plan = PLANS["top2-of-4"].replace(init_noise=0.01, seed=3)
    a = upcycle(tiny_decoder(), plan).model.layers[0].mlp.moe.experts.gate_up_proj
    b = upcycle(tiny_decoder(), plan).model.layers[0].mlp.moe.experts.gate_up_proj
    torch.testing.assert_close(a, b)
    assert (a[0] - a[1]).abs().max() > 0
    relative = (a[0] - a[1]).std() / a[0].std()
    assert 0.005 < relative < 0.03  # two independent 1% perturbations: ~1.4%


def test_shared_dense_ffn_stays_on():
    """shared_ffn='dense': out = dense FFN(x) + routed experts (copies) = 2 x dense at step 0."""
    dense = tiny_decoder()
    x = torch.randn(2, 5, 32)
    reference = dense.model.layers[1].mlp(x)
    upcycle(dense, PLANS["shared-dense-top1-of-4"])
    ffn = dense.model.layers[1].mlp
    assert ffn.moe.shared_experts.ffn.__class__.__name__ == "LlamaMLP"
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), 2 * reference, atol=1e-5, rtol=0)


def test_routing_context_reaches_every_layer_and_last_routing_is_kept():
    plan = UpcyclePlan(num_experts=4, num_experts_per_tok=1, router="modality",
                       modality_experts={"text": [0, 1], "image": [2, 3]})
    model = upcycle(tiny_decoder(), plan)
    ids = token_ids(1, 6)
    modality = torch.tensor([[1, 1, 1, 0, 0, 0]])
    with routing_context(model, modality_ids=modality):
        model(ids)
    for _, ffn in upcycled_layers(model):
        chosen = ffn.last_routing.indices[:, 0]  # [T]
        assert chosen[:3].ge(2).all() and chosen[3:].lt(2).all()
    assert model.routing_context.current().modality_ids is None  # restored after the block
    with pytest.raises(ValueError, match="ModalityRouter needs modality_ids"):
        model(ids)


def test_expert_mask_from_context():
    model = upcycle(tiny_decoder(), PLANS["top2-of-4"])
    with routing_context(model, expert_mask=torch.tensor([False, True, False, True])):
        model(token_ids())
    for _, ffn in upcycled_layers(model):
        assert set(ffn.last_routing.indices[ffn.last_routing.mask].tolist()) <= {1, 3}


def test_public_api_is_exported():
    assert zoo.upcycle is upcycle and zoo.UpcyclePlan is UpcyclePlan and zoo.PLANS is PLANS
