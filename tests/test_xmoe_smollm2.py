"""The XMoE SmolLM2 pieces that need no real weights: router files and the benchmark's corpus."""
from pathlib import Path

import pytest
import torch

from tests.tiny_decoders import tiny_decoder, token_ids
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.pipelines.xmoe_smollm2 import load_routers, read_routers, router_state, save_routers, xmoe_plan


def tiny_xmoe(seed: int = 0, **plan_changes):
    plan = xmoe_plan(num_experts=4).replace(**plan_changes)
    return UpcycledMoeForCausalLM.from_dense(tiny_decoder("llama", seed=seed), plan).eval()


def test_xmoe_plan_is_the_preset_with_finer_experts():
    plan = xmoe_plan(16, threshold=0.5)
    assert (plan.num_experts, plan.threshold, plan.router, plan.experts) == (16, 0.5, "threshold", "split")


def test_router_file_round_trip(tmp_path):
    trained = tiny_xmoe()
    with torch.no_grad():
        for p in router_state(trained):
            trained.get_parameter(p).normal_(0, 0.5)
    path = save_routers(trained, tmp_path / "routers.safetensors", steps=3, heldout_loss=1.25)
    weights, plan, meta = read_routers(path)
    assert plan == trained.config.upcycle_plan and meta == {"steps": 3, "heldout_loss": 1.25}
    assert sorted(weights) == sorted(router_state(trained)) and len(weights) == 4  # one router per layer

    fresh = tiny_xmoe()  # zero routers: a different function until the trained ones are loaded
    ids = token_ids()
    assert not torch.allclose(fresh(ids).logits, trained(ids).logits)
    load_routers(fresh, weights)
    torch.testing.assert_close(fresh(ids).logits, trained(ids).logits, rtol=0, atol=0)


def test_router_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks.xmoe"):
        read_routers(tmp_path / "missing.safetensors")
    path = save_routers(tiny_xmoe(), tmp_path / "routers.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read router weights .*truncated"):
        read_routers(truncated)
    weights, _, _ = read_routers(path)
    other = tiny_xmoe(num_experts=8)
    with pytest.raises(ValueError, match="shape"):
        load_routers(other, weights)
    first = sorted(weights)[0]
    with pytest.raises(ValueError, match="1 router weights missing"):
        load_routers(tiny_xmoe(), {k: v for k, v in weights.items() if k != first})


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="Debian wordnet-base not installed: scripts/install.sh installs it when run as root")
def test_wordnet_glosses_are_parsed():
    from zoo.pipelines.wordnet import wordnet_glosses

    texts = wordnet_glosses()
    assert len(texts) == 117659  # synsets in WordNet 3.0: 82115 nouns + 13767 verbs + 18156 adj + 3621 adv
    assert texts[0] == "entity: that which is perceived or known or inferred to have its own distinct existence (living or nonliving)"
