"""The MoVA gallery tab on the shipped parts: driven through gradio_client (easy-VQA test samples of each question
type picked and asked; pass 1's letters checked against a teacher-forced routing forward and the parser, the
answer against greedy decoding with that mask, the gate table against the adapter recomputed on its own), bad
requests refused with the next one working, and the tab used in headless Chromium."""
import pytest
import torch

import gallery_server
import routing_reference
from headless_chromium import chromium

from zoo.pipelines import mova_demo
from zoo.pipelines import vl_easyvqa as vqa

pytestmark = pytest.mark.slow
BF16_TIE = 0.5  # logits; two bf16 steps at |logit| 32-64


gallery_url, client = gallery_server.tab_fixtures("zoo.apps.mova_tab")


def first_of_type(kind: str) -> int:
    return next(i for i, (_, _, a) in enumerate(mova_demo.samples()) if vqa.answer_type(a) == kind)


def pick(client, index: int) -> tuple[str, str]:
    _, question, expected = mova_demo.samples()[index]
    image, asked = client.predict(f"{index}: {question} ({expected})", api_name="/mova_sample")
    assert asked == question
    return image, question


def ask(client, image, question):
    from gradio_client import handle_file

    return client.predict(None if image is None else handle_file(image), question, api_name="/mova_answer")


def batch_of(image, question: str, reply: str | None = None) -> dict:
    from PIL import Image

    _, processor, _ = mova_demo.get_mova()
    text = None if reply is None else [processor.prompt(question, answer=reply)]
    return processor(images=[Image.open(image).convert("RGB")], questions=[question], text=text)


def routing_answer_is_greedy(image, question: str, routing_answer: str) -> bool:
    """Pass 1's answer token by token is the argmax of one routing-pass forward over prompt + answer."""
    from zoo.pipelines.train_mova import routing_prompt_ids

    model, processor, _ = mova_demo.get_mova()
    answer_ids = processor.tokenizer(routing_answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([routing_prompt_ids(processor, question) + answer_ids])
    batch = {"input_ids": ids, "pixel_values": batch_of(image, question)["pixel_values"], "routing_pass": True}
    return routing_reference.reply_is_greedy(model, batch, answer_ids, tie_tolerance=BF16_TIE)


@pytest.mark.parametrize("kind", ["shape", "colour", "yes/no"])
def test_sample_answer_letters_and_gates_match_the_model(client, kind):
    from zoo.models.mova import routing_mask

    model, processor, _ = mova_demo.get_mova()
    image, question = pick(client, first_of_type(kind))
    reply, summary, gates = ask(client, image, question)
    print(f"{kind}: {question!r} -> {reply!r}; {summary}")

    result = mova_demo.answer(image, question)
    assert reply == result["answer"] and reply.strip()
    assert f"`{result['routing_answer'] or '(nothing)'}`" in summary
    assert routing_answer_is_greedy(image, question, result["routing_answer"])
    mask = routing_mask([result["routing_answer"]], model.config.expert_letters, model.config.expert_names,
                        model.config.max_routed_experts)[0]
    assert result["letters"] == [letter for letter, on in zip(processor.expert_letters, mask.tolist()) if on]
    assert all(f"{letter} ({name})" in summary for letter, name in zip(result["letters"], result["chosen"]))

    batch = batch_of(image, question, reply + vqa.END)
    reply_ids = processor.tokenizer(reply + vqa.END, add_special_tokens=False)["input_ids"]
    teacher_forced = {k: batch[k] for k in ("input_ids", "pixel_values", "question_input_ids", "question_attention_mask")}
    # colour answers are near-ties here (the model is at chance on colour): measured 'blue' 32.75 vs 'red' 32.5 in
    # one full bf16 forward while the cached decode picked 'red'; bf16 steps are 0.25 at that size
    assert routing_reference.reply_is_greedy(model, {**teacher_forced, "expert_mask": mask}, reply_ids,
                                             tie_tolerance=BF16_TIE)

    table = gates["value"]
    assert table["headers"] == ["block", *model.config.expert_names]
    with torch.no_grad():
        _, routings, _ = model.image_features(batch["pixel_values"], mask, None, batch["question_input_ids"],
                                              batch["question_attention_mask"])
    assert [row[0] for row in table["data"]] == list(range(len(routings)))
    for row, routing in zip(table["data"], routings):
        weights = row[1:]
        assert all(w == 0 for w, on in zip(weights, mask.tolist()) if not on)
        if mask.any():
            assert sum(weights) == pytest.approx(1.0, abs=2e-3)
            assert weights == pytest.approx(routing.dense_weights()[0].float().tolist(), abs=1.5e-3)  # 3 decimals


def test_bad_requests_are_refused_and_the_next_good_one_works(client, tmp_path):
    from gradio_client.exceptions import AppError

    image, question = pick(client, 0)
    not_image = tmp_path / "notes.png"
    not_image.write_text("a text file with an image's name")
    for bad_image, bad_question, message in ((None, question, "no image"), (image, "   ", "question is empty"),
                                             (image, "what is <image>?", "may not contain <image>"),
                                             (image, "x" * 301, "301 characters"),
                                             (str(not_image), question, "cannot identify image file")):
        with pytest.raises(AppError, match=message):
            ask(client, bad_image, bad_question)
    reply, _, gates = ask(client, image, question)
    assert reply == mova_demo.answer(image, question)["answer"] and gates["value"]["data"]


@pytest.mark.browser
def test_tab_renders_and_answers_in_chromium(gallery_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    path, question, _ = mova_demo.samples()[0]
    expected = mova_demo.answer(path, question)
    with chromium() as driver:
        driver.get(gallery_url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#mova-image input[type=file]")))
        upload.send_keys(path)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#mova-image img")))
        driver.find_element(By.CSS_SELECTOR, "#mova-question textarea").send_keys(question)
        driver.find_element(By.ID, "mova-ask").click()
        answer_box = driver.find_element(By.CSS_SELECTOR, "#mova-answer textarea")
        WebDriverWait(driver, 120).until(lambda d: answer_box.get_attribute("value"))
        assert answer_box.get_attribute("value") == expected["answer"]
        routing = driver.find_element(By.ID, "mova-routing")
        WebDriverWait(driver, 30).until(lambda d: "pass 1" in routing.text)
        gates = driver.find_element(By.ID, "mova-gates")
        WebDriverWait(driver, 30).until(lambda d: all(name in gates.text for name in expected["headers"]))
