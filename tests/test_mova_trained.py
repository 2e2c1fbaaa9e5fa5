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


# bf16 kernels differ between CPUs: the parts were trained and scored on an Intel Xeon (AMX); recomputed with one thread
# on an AMD EPYC (avx512_bf16) base only / all / random / MoVA came out .706/.702/.702/.704 against the shipped
# .696/.708/.696/.710, MoVA's shape .819 vs .861 (3 of 72 shape questions) and pass 1's picks within .02. On the same
# kind of machine the table is exact; across kinds a cell may move by a few answers.
ACCURACY_TOLERANCE = 0.05
PICKS_TOLERANCE = 0.03


def test_the_shipped_parts_reproduce_the_ablation_table(recomputed, shipped):
    assert recomputed["questions"] == shipped["questions"] == 500
    for condition, row in shipped["accuracy"].items():
        for kind, value in row.items():
            if not kind.endswith("seconds_per_question"):  # timings vary
                assert recomputed["accuracy"][condition][kind] == pytest.approx(value, abs=ACCURACY_TOLERANCE), \
                    (condition, kind)
    for kind, shares in shipped["pass1_picks"].items():
        assert recomputed["pass1_picks"][kind] == pytest.approx(shares, abs=PICKS_TOLERANCE), kind


def test_trained_mova_beats_the_majority_answer_on_yes_no_and_shape(recomputed):
    # a model that ignored the image would answer every yes/no question alike (at most ~0.5 on easy-VQA's balanced
    # yes/no) and one shape of three; colour is at chance here and the README says so
    accuracy = recomputed["accuracy"]["MoVA coarse+fine"]
    assert accuracy["yes/no"] > 0.6 and accuracy["shape"] > 0.5


def test_the_model_card_prints_the_recomputed_table(recomputed):
    from zoo.pipelines.mova_card import render

    def table_rows(card: str) -> dict[str, list[float]]:
        cells = (line.strip("| ").split(" | ") for line in card.splitlines() if line.startswith("| "))
        return {c[0]: [float(x) for x in c[1:]] for c in cells if c[0] not in ("condition", "pass 1 picks")}

    card = render()
    assert "$" not in card.split("```")[0]  # every field filled
    printed = table_rows(card)
    expected = {condition: [row[k] for k in ("all", "yes/no", "shape", "colour")]
                for condition, row in recomputed["accuracy"].items()}
    expected |= {kind: [shares[n] for n in shares] for kind, shares in recomputed["pass1_picks"].items()}
    assert set(printed) == set(expected)
    for name, values in expected.items():
        assert printed[name] == pytest.approx(values, abs=ACCURACY_TOLERANCE), name
