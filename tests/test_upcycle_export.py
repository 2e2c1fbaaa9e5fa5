"""Native export (Mixtral / Qwen3-MoE), Hub export with bundled remote code + model card, push validation,
and the `zoo list / upcycle / export` commands. Loading checks run in fresh processes where `zoo`
cannot be imported."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from tiny_decoders import tiny_decoder, token_ids

import zoo
from zoo.apps.cli import main as cli
from zoo.integrations.hub import export, push
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.models.xmoe import XMoEForCausalLM
from zoo.integrations.native_export import native_config
from zoo.upcycling.plan import PLANS, UpcyclePlan

FRESH_LOAD = """
import sys, torch
sys.modules["zoo"] = None  # `import zoo` fails here: only transformers and the folder's own files
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code={remote}).eval()
with torch.no_grad():
    logits = model(torch.load(sys.argv[2], weights_only=True)).logits
torch.save(logits, sys.argv[3])
print(type(model).__name__)
"""


def load_without_zoo(folder, ids, tmp_path, remote):
    torch.save(ids, tmp_path / "ids.pt")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD.format(remote=remote), str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1], torch.load(tmp_path / "out.pt", weights_only=True)


@pytest.mark.parametrize("arch, plan, expected", [
    ("llama", PLANS["top2-of-4"], "MixtralForCausalLM"),
    ("qwen3", PLANS["moe_llava"].replace(normalize=False), "Qwen3MoeForCausalLM"),
])
def test_native_export_loads_without_zoo_with_equal_logits(tmp_path, arch, plan, expected):
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(arch, tie_word_embeddings=True), plan).eval()
    ids = token_ids()
    reference = model(ids).logits.detach()
    export(model, tmp_path / "native", native=True, base_model="tiny/dense")
    name, logits = load_without_zoo(tmp_path / "native", ids, tmp_path, remote=False)
    assert name == expected
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    assert not list((tmp_path / "native").glob("*.py"))


def test_native_export_refuses_what_has_no_native_equivalent():
    for arch, plan, message in [
        ("llama", PLANS["xmoe"], "router='threshold'"),
        ("llama", PLANS["moe_llava"], "every layer upcycled"),
        ("llama", PLANS["top2-of-4"].replace(normalize=False), "normalize=True"),
        ("gpt2", PLANS["top2-of-4"], "expert banks \\['MLPExperts'\\]"),
        ("llama", PLANS["shared-dense-top1-of-4"], "shared_ffn"),
        ("qwen2", PLANS["top2-of-4"], "Mixtral export needs a llama or mistral decoder"),
    ]:
        model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(arch), plan)
        with pytest.raises(ValueError, match=message):
            native_config(model)


def test_hub_export_loads_with_remote_code_without_zoo(tmp_path):
    model = XMoEForCausalLM.from_dense(tiny_decoder("llama"), PLANS["xmoe"].replace(num_experts=4)).eval()
    ids = token_ids()
    reference = model(ids).logits.detach()
    figures = {"held-out loss": "2.50 (measured by a test fixture)"}
    export(model, tmp_path / "hub", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", figures=figures)
    files = set(os.listdir(tmp_path / "hub"))
    assert {"modeling_xmoe.py", "modeling_upcycled_moe.py", "sparse_upcycling.py", "routing.py", "README.md"} <= files
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_xmoe.XMoEConfig", "AutoModelForCausalLM": "modeling_xmoe.XMoEForCausalLM"}
    name, logits = load_without_zoo(tmp_path / "hub", ids, tmp_path, remote=True)
    assert name == "XMoEForCausalLM"
    torch.testing.assert_close(logits, reference, atol=1e-6, rtol=0)

    card = (tmp_path / "hub" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "moe" in meta["tags"] and meta["license"] == "apache-2.0"
    assert "| held-out loss | 2.50 (measured by a test fixture) |" in card
    total = sum(p.numel() for p in model.parameters())
    assert f"| total parameters | {total:,} |" in card


def test_model_card_without_figures_invents_none(tmp_path):
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder(), "top2-of-4")
    export(model, tmp_path)
    assert "No evaluation figures were supplied" in (tmp_path / "README.md").read_text()


def test_push_validates_its_arguments_before_any_network(tmp_path):
    with pytest.raises(ValueError, match="repo_id must look like 'owner/name'"):
        push(tmp_path, "no-owner")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        push(tmp_path / "missing", "me/model")
    with pytest.raises(ValueError, match=r"missing \['config.json', 'README.md'\]"):
        push(tmp_path, "me/model")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(ValueError, match="no .safetensors"):
        push(tmp_path, "me/model")


def test_cli_list_upcycle_export(tmp_path, capsys):
    assert cli(["list"]) == 0
    listing = capsys.readouterr().out
    assert "zoo_upcycled_moe" in listing and "xmoe" in listing and "top2-of-4" in listing and "moe_llava" in listing

    dense = tiny_decoder("llama")
    dense.save_pretrained(tmp_path / "dense")
    assert cli(["upcycle", "--base", str(tmp_path / "dense"), "--plan", "top2-of-4", "--out", str(tmp_path / "moe")]) == 0
    assert "4 MoE layers x 4 experts" in capsys.readouterr().out
    from transformers import AutoModelForCausalLM

    ids = token_ids()
    upcycled = AutoModelForCausalLM.from_pretrained(tmp_path / "moe")
    torch.testing.assert_close(upcycled(ids).logits, dense(ids).logits, atol=1e-5, rtol=0)

    assert cli(["export", str(tmp_path / "moe"), "--out", str(tmp_path / "native"), "--native"]) == 0
    assert json.loads((tmp_path / "native" / "config.json").read_text())["model_type"] == "mixtral"
    assert cli(["export", str(tmp_path / "moe"), "--out", str(tmp_path / "hub")]) == 0
    assert (tmp_path / "hub" / "modeling_upcycled_moe.py").is_file()


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    dense = tiny_decoder("llama")
    dense.save_pretrained(tmp_path / "dense")
    out = str(tmp_path / "out")

    def fails(argv, message):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert message in err, err

    fails(["upcycle", "--base", str(tmp_path / "dense"), "--plan", "top9", "--out", out], "unknown upcycling plan 'top9'")
    fails(["upcycle", "--base", str(tmp_path / "nowhere"), "--plan", "xmoe", "--out", out], "does not exist")

    import transformers as T

    T.OPTForCausalLM(T.OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 ffn_dim=32)).save_pretrained(tmp_path / "opt")
    fails(["upcycle", "--base", str(tmp_path / "opt"), "--plan", "xmoe", "--out", out], "cannot upcycle architecture 'opt'")

    config = json.loads((tmp_path / "dense" / "config.json").read_text())
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "model.safetensors").write_bytes((tmp_path / "dense" / "model.safetensors").read_bytes())
    (tmp_path / "wrong" / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    fails(["upcycle", "--base", str(tmp_path / "wrong"), "--plan", "top2-of-4", "--out", out],
          "model.layers.0.mlp.down_proj.weight: checkpoint (32, 64) vs config (32, 48)")

    data = (tmp_path / "dense" / "model.safetensors").read_bytes()
    (tmp_path / "dense" / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails(["upcycle", "--base", str(tmp_path / "dense"), "--plan", "top2-of-4", "--out", out], "truncated safetensors file")
    fails(["export", str(tmp_path / "dense"), "--out", out], "truncated safetensors file")
    assert not os.path.exists(out)


def test_xmoe_config_defaults_to_the_preset():
    from zoo.models.xmoe import XMoEConfig

    config = XMoEConfig(text_config=tiny_decoder().config)
    assert UpcyclePlan.from_dict(config.plan) == PLANS["xmoe"] and config.router_aux_loss_coef == 0.01
    with pytest.raises(ValueError, match="router='threshold'"):
        XMoEConfig(text_config=tiny_decoder().config, plan=PLANS["top2-of-4"])
    assert zoo.PLANS["xmoe"].experts == "split"
