"""The shipped easy-VQA parts (projector, routers, expert LoRA deltas) on the real SmolLM2 + MobileNetV2:
accuracy on a fixed test subset, and the gallery tabs' handlers with good and bad input."""
import io
import re

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample():
    from zoo.pipelines.vl_demo import easyvqa_samples

    return easyvqa_samples(1)[0]


# The README's promise, ">= 80% easy-VQA accuracy", is stated on this fixed subset (the one `zoo eval <system>`,
# `vl_cards --evaluate` and the training runs use): 500 test questions, seed 0. On smaller subsets the figure is
# a different sample (measured on the shipped parts: MoIIE 82.0% on the first 128 of them, 80.0% on the first
# 300, 80.6% on all 500), and at 128 questions one standard error is 3.5 points, more than every system's margin.
PROMISED_ACCURACY = 0.80
QUESTIONS, SEED = 500, 0


@pytest.mark.parametrize("system", ["moiie", "mote", "moe_llava", "dense_vl"])
def test_shipped_parts_answer_easyvqa(system):
    import json

    from zoo.pipelines import vl_cards
    from zoo.pipelines import vl_easyvqa as vqa
    from zoo.pipelines.vl_demo import get_system

    model, processor, metadata = get_system(system)  # as the gallery serves it (MoTE: experts packed to 2 bits)
    assert vqa.shipped_path(system).stat().st_size < 8e6  # only the small trained parts are shipped
    test = vqa.EasyVqa("test", processor, limit=QUESTIONS, seed=SEED)
    assert len(test) == QUESTIONS == metadata["eval_questions"]
    report = vqa.accuracy_report(model, test)
    print(f"{system}: easy-VQA on {QUESTIONS} test questions (seed {SEED}) {report} (recorded at training: "
          f"{metadata['easyvqa_test_accuracy']:.3f})")
    assert report["all"] >= PROMISED_ACCURACY, f"{system}: {report['all']:.1%} < the README's {PROMISED_ACCURACY:.0%}"
    # the README / model-card table prints the saved report: it must be what the shipped parts compute
    # (1 point = 5 questions of slack: bf16 autocast on another CPU, MoTE packed here vs latent ternary there)
    saved = json.loads(vl_cards.report_path(system).read_text())
    assert saved["eval_questions"] == QUESTIONS
    assert report["all"] == pytest.approx(saved["easyvqa_test_accuracy"]["all"], abs=0.01)
    # the answers come from the image: other questions' images cost points (about 14 on these 500 questions)
    assert report["images shuffled"] <= report["all"] - 0.05


def test_tab_handlers_answer_and_split_routing_by_modality(sample):
    from zoo.apps import moiie_tab, mote_tab
    from zoo.apps.vl_ui import run
    from zoo.pipelines import vl_easyvqa as vqa

    path, question, _ = sample
    reply, summary, table = run("moiie", path, question)
    assert isinstance(reply, str) and reply.strip()  # an answer always comes back (correctness: the accuracy test)
    assert "image tokens" in summary and "text tokens" in summary
    rows = table["value"]
    assert {r[1] for r in rows} == {"image", "text"}
    image_rows = [r for r in rows if r[1] == "image"]
    assert all(r[2] == vqa.IMAGE_TOKENS for r in image_rows) and all(r[-1] == 0 for r in image_rows)  # never the intra-text expert
    text_rows = [r for r in rows if r[1] == "text"]
    assert all(r[3] == 0 for r in text_rows)  # text never reaches the intra-vision expert
    memory = mote_tab.memory_markdown()
    ternary_mb, bf16_mb = (float(x) for x in re.findall(r"\*\*([\d.]+) MB\*\*", memory))
    assert "packed ternary" in memory
    assert bf16_mb / ternary_mb == pytest.approx(16 / 2, rel=0.02)  # 2 bits/weight vs bf16's 16
    assert moiie_tab.TITLE and mote_tab.TITLE


def test_tab_handlers_reject_bad_input_and_shrink_huge_images(sample, tmp_path):
    import gradio as gr

    from zoo.apps.vl_ui import run

    path, question, _ = sample
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    for image, q, message in ((None, question, "no image"), (path, "  ", "empty"), (str(not_image), question, "not an image"),
                              (path, "<image> twice?", "may not contain")):
        with pytest.raises(gr.Error, match=message):
            run("moiie", image, q)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (6000, 300), "blue").save(huge)
    reply, _, _ = run("mote", str(huge), "what color is the shape?")
    assert isinstance(reply, str)


def test_model_cards_render_the_recorded_figures(tmp_path):
    from zoo.pipelines import vl_cards

    vl_cards.main([str(tmp_path)])
    for system, name in vl_cards.CARDS.items():
        card = (tmp_path / name).read_text()
        recorded = vl_cards.metadata(system)["easyvqa_test_accuracy"]
        assert f"| {system} | {recorded:.1%} |" in card
        assert "$" not in card.replace("$ ", ""), f"{name} has an unfilled placeholder"
        assert "not trained yet" not in card
