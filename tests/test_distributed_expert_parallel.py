"""transformers' own distributed path on CPU (gloo), 2 processes under torchrun (one launch for all cases, ~15 s):

- natively exported Mixtral / Qwen3-MoE folders under expert parallelism (whole experts per rank: E/2 each)
  give the one-process logits, with the ranks holding one batch (ep = tp) or their own (ep over fsdp);
- the zoo's own format under tensor parallelism (the experts' plan from UpcycledMoeConfig.moe_layer_tp_plan,
  each rank holding half of every expert) gives the one-process logits;
- the zoo's format under expert parallelism is refused by name (zoo.integrations.parallel_plans says why)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_decoders import tiny_decoder, token_ids

from zoo.integrations.native_export import export_native
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.upcycling.plan import PLANS

WORKER = Path(__file__).with_name("distributed_ep_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
EXPERTS, INTERMEDIATE, HIDDEN = 4, 64, 32  # tiny_decoders: hidden 32, intermediate 64; top2-of-4


def upcycled(arch: str, plan) -> UpcycledMoeForCausalLM:
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(arch), plan).eval()
    torch.manual_seed(3)
    for name, parameter in model.named_parameters():  # distinct experts, so a wrong shard changes the logits
        if ".moe." in name:
            torch.nn.init.normal_(parameter, std=0.2)
    return model


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ep")
    ids = token_ids()
    llama, qwen3 = upcycled("llama", PLANS["top2-of-4"]), upcycled("qwen3", PLANS["top2-of-4"])
    llama.save_pretrained(folder / "zoo")
    export_native(llama, folder / "mixtral")
    export_native(qwen3, folder / "qwen3_moe")
    with torch.no_grad():
        reference = {"llama": llama(ids).logits, "qwen3": qwen3(ids).logits}
    native_expert = "model.layers.0.mlp.experts.gate_up_proj"
    cases = {
        "mixtral ep over fsdp": dict(folder="mixtral", config=dict(fsdp_size=2, ep_size=2), expert_weight=native_expert),
        "mixtral ep = tp": dict(folder="mixtral", config=dict(tp_size=2, ep_size=2), expert_weight=native_expert),
        "qwen3_moe ep over fsdp": dict(folder="qwen3_moe", config=dict(fsdp_size=2, ep_size=2), expert_weight=native_expert),
        "zoo tp": dict(folder="zoo", config=dict(tp_size=2), expert_weight="model.model.layers.0.mlp.moe.experts.gate_up_proj"),
        "zoo ep": dict(folder="zoo", config=dict(fsdp_size=2, ep_size=2), expert_weight="model.model.layers.0.mlp.moe.experts.gate_up_proj"),
    }
    for case in cases.values():
        case["folder"] = str(folder / case["folder"])
    (folder / "cases.json").write_text(json.dumps({**cases, "ids": ids.tolist()}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(WORKER),
                             str(folder / "cases.json"), str(folder / "out.json")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((folder / "out.json").read_text()), reference


@pytest.mark.parametrize("case, base", [("mixtral ep over fsdp", "llama"), ("mixtral ep = tp", "llama"),
                                        ("qwen3_moe ep over fsdp", "qwen3")])
def test_native_export_runs_under_transformers_expert_parallelism(launched, case, base):
    results, reference = launched
    result = results[case]
    assert "error" not in result, result.get("error")
    assert result["global_shape"] == [EXPERTS, 2 * INTERMEDIATE, HIDDEN]
    assert result["local_shape"] == [EXPERTS // 2, 2 * INTERMEDIATE, HIDDEN]  # whole experts, half of them per rank
    torch.testing.assert_close(torch.tensor(result["logits"]), reference[base], atol=1e-5, rtol=1e-5)


def test_zoo_format_shards_every_expert_under_tensor_parallelism(launched):
    results, reference = launched
    result = results["zoo tp"]
    assert "error" not in result, result.get("error")
    assert result["local_shape"] == [EXPERTS, INTERMEDIATE, HIDDEN]  # half of gate and half of up of each expert
    torch.testing.assert_close(torch.tensor(result["logits"]), reference["llama"], atol=1e-5, rtol=1e-5)


def test_zoo_format_under_expert_parallelism_is_refused_by_name(launched):
    results, _ = launched
    assert "has no `ep_plan`" in results["zoo ep"]["error"]
    assert "UpcycledMoeForCausalLM" in results["zoo ep"]["error"]


def test_declared_tp_plan_names_modules_of_the_model():
    from transformers.distributed.parallel_utils import replace_layer_number_by_wildcard

    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder("qwen3"), PLANS["top2-of-4"].replace(layers="even"))
    names = {replace_layer_number_by_wildcard(n) for n, _ in [*model.named_modules(), *model.named_parameters()]}
    plan = model.tp_plan
    assert set(plan) <= names
    assert plan["model.model.layers.*.mlp.moe.experts.gate_up_proj"] == "packed_colwise"
    assert plan["model.model.layers.*.mlp.moe.experts"] == "moe_tp_experts"
    assert plan["model.model.layers.*.mlp.gate_proj"] == "colwise"  # the dense layers keep the decoder's rules


def test_expert_banks_without_a_plan_run_replicated():
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder("gpt2"), PLANS["top2-of-4"])  # MLP experts with biases
    assert not [key for key in model.tp_plan if ".moe." in key]
