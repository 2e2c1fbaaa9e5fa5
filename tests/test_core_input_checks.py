"""Tensor inputs the routing core used to take silently (issue 14): a NaN in a float expert mask (every
token's output became zero), an integer expert mask (added as a bias: every expert stayed allowed),
integer hidden states (zeros came back), and a non-finite batch in the uncertainty router's training
step (its running statistics took the NaN first, then every later eval call raised LinAlgError and a
checkpoint saved after carried the damage). Each is now refused with an error that names it, before
any state changes."""
from __future__ import annotations

import math

import pytest
import torch
from tiny_decoders import tiny_decoder, token_ids

import zoo  # noqa: F401  (registers the configs with the Auto classes)
from zoo.core import GLUExperts, ModalityRouter, MoEBlock, ThresholdRouter, TopKRouter, UncertaintyAwareRouter
from zoo.models.mofme import MoFMEConfig, MoFMEForImageRestoration
from zoo.models.upcycled import UpcycledMoeForCausalLM

pytestmark = pytest.mark.usefixtures("single_thread")


def block() -> MoEBlock:
    torch.manual_seed(0)
    return MoEBlock(TopKRouter(8, 4, 2), GLUExperts(4, 8, 16)).eval()


# -- expert masks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (5, 4), (1, 5, 4)], ids=["per-expert", "per-token", "batched"])
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "+inf"])
def test_a_non_finite_float_bias_is_refused(shape, bad):
    mask = torch.zeros(shape)
    mask.view(-1)[1] = bad
    hidden = torch.randn(*shape[:-1], 8) if len(shape) > 1 else torch.randn(5, 8)
    with pytest.raises(ValueError, match=r"expert_mask \(a float bias\) holds NaN or \+inf"):
        block()(hidden, expert_mask=mask)


def test_minus_inf_still_forbids_an_expert():
    moe, hidden = block(), torch.randn(5, 8)
    bias = torch.tensor([0.0, -math.inf, 0.0, 0.0])
    out, routing = moe(hidden, expert_mask=bias)
    assert 1 not in routing.indices[routing.mask].tolist()
    allowed = moe(hidden, expert_mask=torch.tensor([True, False, True, True]))[0]
    torch.testing.assert_close(out, allowed)  # a -inf bias and a False entry mean the same
    assert out.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_an_integer_expert_mask_is_refused_not_added_as_a_bias(dtype):
    moe, hidden = block(), torch.randn(5, 8)
    with pytest.raises(TypeError, match=r"expert_mask must be a bool tensor .* got dtype torch\.\w+; .*mask\.bool\(\)"):
        moe(hidden, expert_mask=torch.tensor([1, 0, 0, 1], dtype=dtype))
    _, routing = moe(hidden, expert_mask=torch.tensor([1, 0, 0, 1], dtype=dtype).bool())  # what was meant
    assert set(routing.indices[routing.mask].tolist()) <= {0, 3}


def test_an_expert_mask_that_is_not_a_tensor_is_refused():
    with pytest.raises(TypeError, match="expert_mask must be a Tensor"):
        block()(torch.randn(5, 8), expert_mask=[True, False, True, True])


def test_bad_expert_masks_are_refused_through_a_real_model():
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(), "top2-of-4").eval()
    ids = token_ids()
    with torch.no_grad():
        model(ids, expert_mask=torch.tensor([True, True, False, True]))
        with pytest.raises(TypeError, match="expert_mask must be a bool tensor"):
            model(ids, expert_mask=torch.tensor([1, 1, 0, 1]))
        with pytest.raises(ValueError, match="expert_mask .* holds NaN"):
            model(ids, expert_mask=torch.tensor([0.0, math.nan, 0.0, 0.0]))


# -- hidden states ------------------------------------------------------------------------------------
ROUTERS = {
    "top_k": lambda: TopKRouter(8, 4, 2),
    "threshold": lambda: ThresholdRouter(8, 4),
    "modality": lambda: ModalityRouter(8, 4, {"text": [0], "image": [1]}, shared_experts=[2, 3]),
    "uncertainty": lambda: UncertaintyAwareRouter(8, 4, 2),
}


@pytest.mark.parametrize("router", list(ROUTERS))
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_hidden_states_are_refused(router, dtype):
    moe = MoEBlock(ROUTERS[router](), GLUExperts(4, 8, 16))
    hidden = torch.ones(5, 8, dtype=dtype)
    with pytest.raises(TypeError, match=r"hidden states must be a floating-point tensor, got dtype torch\.(int64|bool)"):
        moe(hidden, modality_ids=torch.zeros(5, dtype=torch.long))


def test_float_modality_ids_are_refused_by_the_modality_router():
    router = ROUTERS["modality"]()
    with pytest.raises(TypeError, match="modality_ids must be an integer tensor, got dtype torch.float32"):
        router(torch.randn(5, 8), modality_ids=torch.zeros(5))


# -- the uncertainty router's running statistics ----------------------------------------------------
def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def assert_bit_identical(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    changed = [name for name, value in before.items() if not torch.equal(after[name], value)]
    assert not changed, f"state changed by a refused call: {changed}"


@pytest.mark.parametrize("poison", ["nan", "inf", "overflow"])
def test_uncertainty_router_refuses_a_non_finite_batch_before_its_statistics_change(poison):
    torch.manual_seed(0)
    router = UncertaintyAwareRouter(8, 4, 2).train()
    router(torch.randn(16, 8))  # statistics off their init
    before = snapshot(router)
    batch = torch.randn(16, 8)
    if poison == "overflow":  # finite, but the scores' covariance overflows fp32
        batch[3] = 1e30
    else:
        batch[3, 2] = math.nan if poison == "nan" else math.inf
    with pytest.raises(ValueError, match="refused before the running statistics change"):
        router(batch)
    assert_bit_identical(router, before)
    router.eval()
    probe = torch.randn(6, 8)
    assert torch.isfinite(router(probe).weights).all()  # eval still works (it raised LinAlgError)


MOFME = dict(head_channels=8, num_head_res_blocks=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_experts=4, num_experts_per_tok=2, decoder_channels=8, decoder_hidden_channels=8, hidden_dropout=0.0)


@pytest.mark.parametrize("moe_type", ["fme", "ffn"])
def test_one_nan_pixel_in_a_mofme_training_batch_changes_nothing(tmp_path, moe_type):
    torch.manual_seed(0)
    model = MoFMEForImageRestoration(MoFMEConfig(**MOFME, moe_type=moe_type))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clean, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    model.train()
    model(pixel_values=clean, labels=target).loss.backward()  # one good step first
    optimizer.step()
    optimizer.zero_grad()
    probe = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        expected = model.eval()(probe).reconstruction
    before = snapshot(model)

    poisoned = clean.clone()
    poisoned[1, 0, 5, 7] = math.nan
    model.train()
    with pytest.raises(ValueError, match="hidden states hold NaN or inf"):
        model(pixel_values=poisoned, labels=target)
    assert_bit_identical(model, before)

    with torch.no_grad():
        torch.testing.assert_close(model.eval()(probe).reconstruction, expected, rtol=0, atol=0)
    model.save_pretrained(tmp_path)  # the checkpoint saved after is the undamaged model
    loaded = MoFMEForImageRestoration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe).reconstruction, expected)
