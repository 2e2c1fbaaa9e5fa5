"""XMoE trained from scratch (issue 16): the recipe's arms start from one seeded dense init, a run learns, a
paused run resumes bit-identically, dense-to-sparse starts as the dense model, bad settings are named, and the
shipped XMoE arm reproduces its reported test perplexity and expert FLOPs."""
import json
import math

import pytest
import torch

from zoo.pipelines.train import TrainOptions
from zoo.pipelines.train_xmoe import ARMS, SCRATCH_DEFAULTS, build_arm, evaluate_lm, train_dense_to_sparse, train_scratch

# tiny tensors, and the resume check is bitwise: one torch thread (with two, CPU reductions may change order)
pytestmark = pytest.mark.usefixtures("single_thread")
SMOKE = {"hidden": 32, "layers": 2, "heads": 2, "vocab": 512, "seq_len": 32, "batch": 4, "eval_rows": 16,
         "eval_batch": 8, "checkpoint_every": 2}


def test_every_moe_arm_is_cut_from_the_same_dense_init():
    """Same seed: the experts of top2-of-8 and of top16-of-64 are the same 4H x 4 hidden units in other cuts."""
    settings = {**SCRATCH_DEFAULTS, **SMOKE}
    models = {name: build_arm(ARMS[name], settings, 512, 0, seed=3) for name in ("top2-of-8", "top16-of-64", "xmoe-t0.9")}

    def gate_rows(model):  # [4 * 4H, H]: every expert's gate projection, in expert order
        experts = model.moe_layers()[0][1].moe.experts
        gate = experts.gate_up_proj[:, : experts.intermediate_size]  # [E, I_e, H]: the fused gate half
        return gate.reshape(-1, settings["hidden"])

    reference = gate_rows(models["top2-of-8"])
    assert reference.shape[0] == 16 * settings["hidden"]
    for name in ("top16-of-64", "xmoe-t0.9"):
        assert torch.equal(gate_rows(models[name]), reference), name
    embeddings = [m.get_input_embeddings().weight for m in models.values()]
    assert all(torch.equal(e, embeddings[0]) for e in embeddings)


def test_a_run_learns_and_records_measured_flops(tmp_path):
    result = train_scratch(TrainOptions(output_dir=tmp_path, max_steps=60, extra={**SMOKE, "arm": "top2-of-8",
                                                                                    "lr": 5e-3, "checkpoint_every": 10}))
    curve = result["train_curve_every_10_steps"]
    assert len(curve) == 6 and curve[-1] < curve[0] - 0.3, curve
    assert result["test"]["loss"] < math.log(512) - 0.8, result["test"]  # well below the uniform guess, on unseen glosses
    assert result["test"]["experts_per_token"] == pytest.approx(2.0)
    assert result["test"]["expert_flops"] == pytest.approx(1.0)  # 2 experts of 2H units = the dense FFN's 4H
    assert math.isclose(result["test"]["perplexity"], math.exp(result["test"]["loss"]), rel_tol=1e-3)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32)
    assert type(model).__name__ == "UpcycledMoeForCausalLM"
    assert AutoTokenizer.from_pretrained(tmp_path / "model").vocab_size == 512
    assert json.loads((tmp_path / "results.json").read_text())["test"] == result["test"]


def test_a_paused_run_resumes_bit_identically(tmp_path):
    extra = {**SMOKE, "arm": "xmoe-t0.75"}
    whole = train_scratch(TrainOptions(output_dir=tmp_path / "whole", max_steps=4, extra=extra))
    paused = train_scratch(TrainOptions(output_dir=tmp_path / "paused", max_steps=4, extra={**extra, "pause_after": 2}))
    assert paused["paused_after"] == 2
    resumed = train_scratch(TrainOptions(output_dir=tmp_path / "paused", max_steps=4, resume=True, extra=extra))
    assert resumed["test"] == whole["test"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model" / "model.safetensors"), load_file(tmp_path / "paused" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dense_to_sparse_starts_as_the_dense_model(tmp_path):
    dense = train_scratch(TrainOptions(output_dir=tmp_path / "dense", max_steps=2, extra={**SMOKE, "arm": "dense"}))
    from transformers import AutoModelForCausalLM

    from zoo.models.xmoe import XMoEForCausalLM
    from zoo.pipelines.train_xmoe import dense_to_sparse_plan

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense" / "model", dtype=torch.float32)
    rows = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(input_ids=rows).logits
    plan = dense_to_sparse_plan({"experts": 4, "threshold": 1.0})
    sparse = XMoEForCausalLM.from_dense(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(sparse(input_ids=rows).logits, reference, rtol=1e-4, atol=1e-4)
    result = train_dense_to_sparse(TrainOptions(output_dir=tmp_path / "d2s", max_steps=2, extra={
        "dense_run": str(tmp_path / "dense"), "experts": 4, "threshold": 0.5, "eval_rows": 16, "eval_batch": 8,
        "batch": 4, "checkpoint_every": 2}))
    assert result["arm"] == "dense-to-sparse" and result["source_steps"] == dense["steps"]
    assert 1 <= result["test"]["experts_per_token"] < 4


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown arm 'top3'"):
        train_scratch(TrainOptions(output_dir=tmp_path, extra={"arm": "top3"}))
    with pytest.raises(ValueError, match=r"unknown settings \['hiden'\]"):
        train_scratch(TrainOptions(output_dir=tmp_path, extra={"hiden": 64}))
    with pytest.raises(ValueError, match="multiple of heads"):
        train_scratch(TrainOptions(output_dir=tmp_path, extra={"hidden": 30, "heads": 4}))
    with pytest.raises(FileNotFoundError, match="no trained dense arm"):
        train_dense_to_sparse(TrainOptions(output_dir=tmp_path, extra={"dense_run": str(tmp_path / "nothing")}))


def test_the_study_verdict_uses_the_seed_spread():
    from zoo.pipelines.xmoe_study import claim_lines, summarise

    def run(arm, seed, ppl, flops, threshold=None):
        return {"arm": arm, "seed": seed, "description": arm, "parameters": 1, "train_tokens": 1, "train_seconds": 1.0,
                "plan": {"threshold": threshold}, "validation": {"perplexity": ppl},
                "test": {"perplexity": ppl, "expert_flops": flops, "experts_per_token": 16 * flops, "dropped_fraction": 0.0}}

    rows = summarise([run("top16-of-64", 0, 50.0, 1.0), run("top16-of-64", 1, 51.0, 1.0),
                      run("xmoe-t0.5", 0, 50.8, 0.4), run("xmoe-t0.5", 1, 51.6, 0.4),
                      run("xmoe-t0.9", 0, 53.0, 0.9), run("xmoe-t0.9", 1, 53.2, 0.9)])
    lines = claim_lines(rows)
    assert lines[0].startswith("xmoe-t0.5 vs top16-of-64: +60.0% expert FLOPs saved") and "on par" in lines[0]
    assert "worse" in lines[1]


@pytest.mark.slow
def test_the_shipped_arm_reproduces_its_reported_figures():
    """models/xmoe/trained/scratch (the xmoe-t0.9 arm, seed 0): the test perplexity and the experts per token
    recomputed on the whole test split match the results it shipped with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zoo.pipelines.train_xmoe import corpus_rows, shipped_dir

    folder = shipped_dir()
    report = json.loads((folder / "results.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert type(model).__name__ == "XMoEForCausalLM"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = report["settings"]
    rows = corpus_rows(tokenizer, settings["seq_len"])["test"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count the figures were computed with: the same fp32 summation order
    try:
        measured = evaluate_lm(model, rows, settings["eval_batch"], 4 * settings["hidden"])
    finally:
        torch.set_num_threads(threads)
    print("recomputed:", measured, "reported:", report["test"])
    assert measured["tokens"] == report["test"]["tokens"]
    assert measured["perplexity"] == pytest.approx(report["test"]["perplexity"], rel=2e-3)  # fp32 sums across CPU kinds
    assert measured["experts_per_token"] == pytest.approx(report["test"]["experts_per_token"], abs=0.05)


def test_the_command_line_runs_a_smoke_arm(tmp_path, capsys):
    from zoo.apps.cli import main

    settings = [arg for key, value in {**SMOKE, "arm": "top8-of-64"}.items() for arg in ("--set", f"{key}={value}")]
    assert main(["train", "xmoe", "--recipe", "scratch", "--max-steps", "2", "--output-dir", str(tmp_path), *settings]) == 0
    printed = capsys.readouterr().out
    assert '"arm": "top8-of-64"' in printed and (tmp_path / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["test"]["experts_per_token"] == pytest.approx(8.0)


def test_the_card_shows_every_arm_of_the_shipped_study():
    from zoo.pipelines.xmoe_card import render, study_path

    study = json.loads(study_path().read_text())
    card = render()
    for row in study["rows"]:
        assert f"| {row['arm']} |" in card
    assert all(line in card for line in study["claims"])
    assert {s for row in study["rows"] for s in row["seeds"]} >= {0, 1}  # every figure has a second seed
