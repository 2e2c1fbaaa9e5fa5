"""The MoVA recipe (zoo.pipelines.train_mova) end to end on a tiny random MoVA (tests/tiny_mova.py) and a few real
easy-VQA questions: both stages, the routing labels, the ablation report, the saved parts, and a run killed in
either stage then resumed (pipelines.checkpoints) ending exactly where an uninterrupted one does."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_mova import tiny_model
from zoo.pipelines import train_mova as tm
from zoo.pipelines import vl_easyvqa as vqa
from zoo.pipelines.train import TrainOptions, get_evaluation, get_recipe

SETTINGS = {**tm.TINY, "adapter_steps": 2, "batch_size": 4, "label_samples": 6, "routing_steps": 2,
            "routing_batch_size": 3, "routing_lora_rank": 2, "answer_lora_rank": 2, "validation_images": 2, "validation_questions": 4,
            "eval_batch_size": 8, "save_every": 1}


@pytest.fixture(scope="module")
def data(single_thread_module):
    _, processor = tiny_model(trained=False, routing_lora_rank=2, answer_lora_rank=2)
    return vqa.EasyVqa("train", processor, limit=40), vqa.EasyVqa("test", processor, limit=9)


@pytest.fixture(scope="module")
def single_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Killed(Exception):
    pass


def run(directory, data, resume=False, monkeypatch=None, kill_in=None, kill_at=2):
    """One tiny recipe run; with `kill_in` it dies at the `kill_at`-th batch of that stage ("answer", "routing") or
    while labelling the validation split ("labels": the training labels are written, the validation ones not)."""
    model, processor = tiny_model(trained=False, routing_lora_rank=2, answer_lora_rank=2)
    if kill_in is not None:
        owner, method = {"answer": (tm.MovaVqa, "batch"), "routing": (tm.RoutingVqa, "batch"),
                         "labels": (tm, "label_routing")}[kill_in]
        real, calls = getattr(owner, method), [0]

        def dying(*args):
            calls[0] += 1
            if calls[0] == kill_at:
                raise Killed
            return real(*args)

        monkeypatch.setattr(owner, method, dying)
    result = tm.train(model, processor, *data, SETTINGS, directory, resume, seed=0)
    trained = tm.adapter_names(model) + tm.routing_lora_names(model)
    return result, {n: p.detach().clone() for n, p in model.named_parameters() if n in set(trained)}


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    return run(tmp_path_factory.mktemp("straight"), data)


def test_the_recipe_reports_the_four_conditions_per_question_type(straight):
    result, parts = straight
    report = result["test"]
    assert set(report["accuracy"]) == set(tm.CONDITIONS) and report["questions"] == 9
    for row in report["accuracy"].values():
        assert 0 <= row["all"] <= 1 and set(tm.QUESTION_TYPES) <= set(row)
    for shares in report["pass1_picks"].values():
        assert set(shares) == {"ConvNet", "DINO", "Faces", "none"} and all(0 <= s <= 1 for s in shares.values())
    assert report["routing_seconds_per_question"] > 0
    assert set(result["routing_labels"]["train"]) == {"ConvNet", "DINO", "Faces", "none"}
    assert any(n.startswith("routing_lora.") for n in parts) and any(n.startswith("adapter.") for n in parts)
    assert "| MoVA coarse+fine |" in tm.table(report)
    # the report was measured with the parts as shipped (bf16), not with fp32 values that are never saved
    assert all(torch.equal(v, v.to(torch.bfloat16).to(v.dtype)) for v in parts.values())


def test_both_stages_change_their_parts(straight, data):
    _, trained = straight
    fresh, _ = tiny_model(trained=False, routing_lora_rank=2, answer_lora_rank=2)
    params = dict(fresh.named_parameters())
    for prefix in ("adapter.", "projector.", "routing_lora.", "answer_lora."):
        assert any(not torch.equal(params[n], v) for n, v in trained.items() if n.startswith(prefix)), prefix


def test_routing_labels_follow_the_paper_rule(tmp_path, data):
    model, processor = tiny_model(seed=1, trained=True)
    train_data, _ = data
    rows = list(range(6))
    view = tm.MovaVqa(train_data, processor, rows, torch.zeros(6, 3, dtype=torch.bool))
    state = tm.cached_labels(tmp_path / "labels.pt", model, view, 4)
    gain = state["base_losses"][:, None] - state["expert_losses"]
    assert torch.equal(state["labels"], gain > 0)  # 3 experts: "at most 3" keeps every useful one
    assert torch.equal(tm.cached_labels(tmp_path / "labels.pt", None, view, 4)["labels"], state["labels"])  # reused
    target = tm.routing_target(torch.tensor([True, False, True]), processor.expert_letters)
    assert target == "A, C" and processor.parse_routing_answer(target) == [0, 2]
    assert tm.routing_target(torch.tensor([False, False, False]), processor.expert_letters) == "none"


@pytest.mark.parametrize("kill_in", ["answer", "labels", "routing"])
def test_a_run_killed_in_either_stage_then_resumed_ends_where_an_uninterrupted_one_does(tmp_path, data, monkeypatch,
                                                                                        straight, kill_in):
    with pytest.raises(Killed):
        run(tmp_path, data, monkeypatch=monkeypatch, kill_in=kill_in)
    monkeypatch.undo()
    _, resumed = run(tmp_path, data, resume=True)
    for name, value in straight[1].items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_resume_without_a_checkpoint_is_refused(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(tmp_path, data, resume=True)


def test_a_run_without_resume_reuses_nothing_of_an_earlier_one(tmp_path, data, straight):
    other, _ = tiny_model(seed=5, trained=True)  # an earlier run's finished stage 1 must not leak into a fresh run
    tm.trained_parts.save_parts(other, tmp_path / "adapter.safetensors", tm.adapter_names(other))
    _, parts = run(tmp_path, data)
    for name, value in straight[1].items():
        torch.testing.assert_close(parts[name], value, rtol=0, atol=0, msg=name)


def test_bad_settings_are_refused():
    assert get_recipe("mova", "tiny") is tm.tiny and get_evaluation("mova") is tm.evaluate_shipped
    with pytest.raises(ValueError, match="unknown --set keys"):
        tm.settings_of(TrainOptions(extra={"adapter_stepz": 3}))
    with pytest.raises(ValueError, match="expert_rate"):
        tm.settings_of(TrainOptions(extra={"expert_rate": 1.5}))
    assert tm.settings_of(TrainOptions(max_steps=2))["routing_steps"] == 2


def test_bf16_pixels_reach_experts_of_another_input_size(single_thread_module):
    """easy-VQA keeps its pixels in bf16; an expert whose input size differs resizes them (a bf16 resize used to fail)."""
    model, _ = tiny_model(seed=2)
    pixels = torch.rand(2, 3, 40, 40)
    for expert in model.vision_experts:
        want = expert(pixels.to(torch.bfloat16).float())
        torch.testing.assert_close(expert(pixels.to(torch.bfloat16)).float(), want, rtol=0.05, atol=0.05)


def test_evaluating_without_shipped_parts_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(tm, "shipped_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="zoo train mova --recipe tiny --set ship=true"):
        tm.evaluate_shipped()
    with pytest.raises(ValueError, match="--weights"):
        tm.evaluate_shipped("some.safetensors")
