"""The Uni-MoE gallery tab on the shipped parts: driven through gradio_client (a test-split sample of every
modality picked and asked; the answer checked against greedy decoding recomputed here, and the routing table
against the router logits of a plain forward), bad and oversized uploads refused with the next request
working, and the tab used in headless Chromium."""
import numpy as np
import pytest
import soundfile as sf

import gallery_server
import routing_reference
from headless_chromium import chromium

from zoo.pipelines import unimoe_demo

pytestmark = pytest.mark.slow
MODALITIES = ["image", "speech+image", "speech", "video", "audio"]


gallery_url, client = gallery_server.tab_fixtures("zoo.apps.unimoe_tab")


def sample_of(modality: str) -> dict:
    return next(s for s in unimoe_demo.samples() if s["modality"] == modality)


def ask(client, question, image=None, video=None, audio=None):
    from gradio_client import handle_file

    files = [None if f is None else handle_file(str(f)) for f in (image, video, audio)]
    return client.predict(question, *files, api_name="/unimoe_ask")


def model_batch(question, media: dict, reply: str | None = None):
    """The processor's inputs for `media` ({"image": path, ...}), the prompt as the demo builds it."""
    from PIL import Image

    from zoo.multimodal.audio import load_audio

    model, processor, _ = unimoe_demo.get_unimoe()
    given = tuple(m for m in unimoe_demo.MEDIA_ORDER if m in media)
    return processor(text=processor.prompt(question, answer=reply, media=given),
                     images=[Image.open(media["image"]).convert("RGB")] if "image" in media else None,
                     videos=[media["video"]] if "video" in media else None,
                     audio=[load_audio(media["audio"]).numpy()] if "audio" in media else None, sampling_rate=16000)


@pytest.mark.parametrize("modality", MODALITIES)
def test_sample_answer_and_routing_table_match_the_model(client, modality):
    sample = sample_of(modality)
    image, video, audio, question = client.predict(sample["label"], api_name="/unimoe_sample")
    assert question == sample["question"]
    media = {k: v for k, v in (("image", image), ("video", video), ("audio", audio)) if v is not None}
    assert set(media) == {k for k in ("image", "video", "audio") if k in sample}
    reply, summary, table = ask(client, question, image, video, audio)
    print(f"{modality}: {question!r} -> {reply!r} (test answer {sample['answer']!r})")

    model, processor, _ = unimoe_demo.get_unimoe()
    reply_ids = processor.tokenizer(reply, add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    assert reply.strip() and routing_reference.reply_is_greedy(model, model_batch(question, media, reply + "<|im_end|>"),
                                                               reply_ids)
    table = table["value"]
    assert table["headers"] == ["layer", "tokens of", "tokens"] + unimoe_demo.expert_names()
    token_modalities = ["text"] + [m for m in ("image", "audio", "video") if m in media]
    reference = routing_reference.routing_rows(model, model_batch(question, media), token_modalities)
    rows = table["data"]
    assert [r[:3] for r in rows] == [r[:3] for r in reference]
    assert {r[1] for r in rows} == set(token_modalities)
    for got, want in zip(rows, reference):
        assert got[3:] == pytest.approx(want[3:], abs=1.5e-3), got[:2]  # the table rounds to 3 decimals
    assert all(f"**{m}** tokens" in summary for m in token_modalities)


def test_a_spoken_question_needs_no_typed_question(client):
    sample = next(s for s in unimoe_demo.samples() if s["question"] == unimoe_demo.default_prompt(False))
    reply, summary, _ = ask(client, "", audio=sample["audio"])
    assert unimoe_demo.default_prompt(False) in summary
    assert reply == ask(client, sample["question"], audio=sample["audio"])[0]


def test_bad_and_oversized_uploads_are_refused_and_the_next_request_works(client, tmp_path):
    from gradio_client.exceptions import AppError

    sample = sample_of("image")
    silent, long_clip, not_gif = tmp_path / "silent.wav", tmp_path / "long.wav", tmp_path / "clip.gif"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(long_clip, 0.1 * np.random.default_rng(0).standard_normal(16000 * 31).astype(np.float32), 16000)
    not_gif.write_text("not a picture")
    for kwargs, message in (({"question": ""}, "question is empty"),
                            ({"question": "what color? <image>", "image": sample["image"]}, "may not contain <image>"),
                            ({"question": "x" * 301, "image": sample["image"]}, "301 characters"),
                            ({"question": "which keys?", "audio": silent}, "silent"),
                            ({"question": "which keys?", "audio": long_clip}, "more than the maximum of 30 s"),
                            ({"question": "which direction?", "video": not_gif}, "not a readable animated GIF")):
        with pytest.raises(AppError, match=message):
            ask(client, **kwargs)
    reply, _, table = ask(client, sample["question"], image=sample["image"])
    assert reply == unimoe_demo.answer(sample["question"], image=sample["image"])["answer"] and table["value"]["data"]


@pytest.mark.browser
def test_tab_renders_and_answers_in_chromium(gallery_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    sample = sample_of("image")
    expected = unimoe_demo.answer(sample["question"], image=sample["image"])["answer"]
    with chromium() as driver:
        driver.get(gallery_url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#unimoe-image input[type=file]")))
        upload.send_keys(sample["image"])
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#unimoe-image img")))
        driver.find_element(By.CSS_SELECTOR, "#unimoe-question textarea").send_keys(sample["question"])
        driver.find_element(By.ID, "unimoe-ask").click()
        answer_box = driver.find_element(By.CSS_SELECTOR, "#unimoe-answer textarea")
        WebDriverWait(driver, 120).until(lambda d: answer_box.get_attribute("value"))
        assert answer_box.get_attribute("value") == expected
        routing = driver.find_element(By.ID, "unimoe-routing")
        WebDriverWait(driver, 30).until(lambda d: "image expert" in routing.text and "text" in routing.text)
