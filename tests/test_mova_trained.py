"""The shipped MoVA parts (models/mova/trained/easyvqa-tiny.safetensors) on the real SmolLM2, towers and MiniLM:
the whole ablation table (accuracy per question type for the four conditions) and pass 1's picks per question
type recomputed on the easy-VQA test questions, equal to the report shipped beside the parts (which the README
quotes), and both trained conditions above the majority answer of each question type."""
import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recomputed():
    import torch

    from zoo.pipelines.train_mova import evaluate_shipped

    # The report was computed with one torch thread (the recipe's setting on busy shared cores); bf16 sums split
    # over two threads round differently: with torch's default 2 threads here, base-only "all" came out .706 against
    # the shipped .696 (5 of 500 answers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate_shipped()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shipped():
    from zoo.pipelines.train_mova import shipped_dir

    return json.loads((shipped_dir() / "easyvqa-tiny.report.json").read_text())["test"]


def test_the_shipped_parts_reproduce_the_ablation_table(recomputed, shipped):
    assert recomputed["questions"] == shipped["questions"] == 500
    for condition, row in shipped["accuracy"].items():
        for kind, value in row.items():
            if not kind.endswith("seconds_per_question"):  # timings vary; accuracies are exact
                assert recomputed["accuracy"][condition][kind] == pytest.approx(value, abs=1e-9), (condition, kind)
    for kind, shares in shipped["pass1_picks"].items():
        assert recomputed["pass1_picks"][kind] == pytest.approx(shares, abs=1e-9), kind


def test_trained_mova_beats_the_majority_answer_on_yes_no_and_shape(recomputed):
    # a model that ignored the image would answer every yes/no question alike (at most ~0.5 on easy-VQA's balanced
    # yes/no) and one shape of three; colour is at chance here and the README says so
    accuracy = recomputed["accuracy"]["MoVA coarse+fine"]
    assert accuracy["yes/no"] > 0.6 and accuracy["shape"] > 0.5


def test_the_model_card_prints_the_recomputed_table(recomputed):
    from zoo.pipelines.mova_card import render, shipped_report

    def table_rows(card: str) -> list[str]:
        return [line for line in card.splitlines() if line.startswith("| ")]

    card = render()
    assert "$" not in card.split("```")[0]  # every field filled
    assert table_rows(card) and table_rows(card) == table_rows(render({**shipped_report(), "test": recomputed}))
