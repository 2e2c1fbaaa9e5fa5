"""The running gallery with the real XMoE SmolLM2: driven through gradio_client, and rendered in
headless Chromium. One server per module (the model loads once: ~1 s from the fp32 cache + upcycling)."""
import pytest
import torch
from headless_chromium import chromium

from zoo.apps import chat_tab, gallery
from zoo.pipelines.xmoe_smollm2 import ROUTERS_FILE

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def gallery_url():
    default = chat_tab.DEFAULT_NEW_TOKENS
    chat_tab.DEFAULT_NEW_TOKENS = NEW_TOKENS  # the browser test sends with the slider's default
    demo, url = gallery.launch(block=False, tab_modules=["zoo.apps.chat_tab"])
    try:
        yield url
    finally:
        demo.close()
        chat_tab.DEFAULT_NEW_TOKENS = default


@pytest.fixture(scope="module")
def client(gallery_url):
    from gradio_client import Client

    return Client(gallery_url, verbose=False)


def reply_text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def test_empty_message_is_refused_and_the_app_keeps_running(client):
    from gradio_client.exceptions import AppError

    for empty in ("", "   \n"):
        with pytest.raises(AppError, match="message is empty"):
            client.predict(empty, [], NEW_TOKENS, 0.0, api_name="/chat")
    with pytest.raises(AppError, match="less than minimum value 1"):  # the slider range, checked by gradio
        client.predict("hi", [], 0, 0.0, api_name="/chat")


def threshold_reference(probs: torch.Tensor, threshold: float) -> list[int]:
    """Experts XMoE takes per token, by a loop over the sorted probabilities."""
    counts = []
    for row in probs.tolist():
        mass, count = 0.0, 0
        for p in sorted(row, reverse=True):
            if count and mass >= threshold:
                break
            mass, count = mass + p, count + 1
        counts.append(count)
    return counts


def test_chat_reply_and_routing_heatmap_data(client):
    history, textbox, plot, routing, stats = client.predict(QUESTION, [], NEW_TOKENS, 0.0, api_name="/chat")
    assert textbox == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    reply = reply_text(history[1])
    assert "Paris" in reply, reply
    assert plot and plot["type"] == "matplotlib" and plot["plot"].startswith("data:image")

    # The routing data is the model's: recompute it from the router logits of one forward in this process.
    model, tokenizer = chat_tab._state["model"], chat_tab._state["tokenizer"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                           return_tensors="pt")
    prompt = prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS, do_sample=False)
    reply_ids = [i for i in generated[0, prompt.shape[1]:].tolist() if i not in chat_tab._eos_ids(model)]
    assert tokenizer.decode(reply_ids, skip_special_tokens=True) == reply
    assert routing["tokens"] == [tokenizer.decode([i]) for i in reply_ids]
    with torch.no_grad():
        out = model(torch.tensor([prompt[0].tolist() + reply_ids]), output_router_logits=True)
    plan = model.config.upcycle_plan
    assert len(routing["layers"]) == len(out.router_logits) == 30 and routing["num_experts"] == plan.num_experts == 16
    agree = total = 0
    for layer, logits in enumerate(out.router_logits):
        probs = torch.softmax(logits[prompt.shape[1]:].float(), dim=-1)  # [T, E] for the reply tokens
        agree += sum(a == b for a, b in zip(probs.argmax(-1).tolist(), routing["top_expert"][layer]))
        agree += sum(a == b for a, b in zip(threshold_reference(probs, plan.threshold), routing["experts_used"][layer]))
        total += 2 * len(reply_ids)
    assert agree / total > 0.97  # KV-cached vs full forward may flip a near-tie; nothing more
    mean_used = sum(map(sum, routing["experts_used"])) / (30 * len(reply_ids))
    assert routing["mean_experts_per_token"] == pytest.approx(mean_used)
    assert f"{mean_used:.2f} of 16 experts" in stats
    if ROUTERS_FILE.is_file():
        assert "Routers trained" in stats and "Untrained" not in stats


def test_follow_up_message_sees_the_history(client):
    history, *_ = client.predict(QUESTION, [], NEW_TOKENS, 0.0, api_name="/chat")
    history2, *_ = client.predict("Repeat your last answer.", history, NEW_TOKENS, 0.0, api_name="/chat")
    assert [m["role"] for m in history2] == ["user", "assistant", "user", "assistant"]
    assert reply_text(history2[0]) == QUESTION and reply_text(history2[3])


@pytest.mark.browser
def test_page_renders_chat_tab_and_a_reply_in_chromium(gallery_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(gallery_url)
        wait = WebDriverWait(driver, 60)
        tab = wait.until(ec.visibility_of_element_located((By.XPATH, "//button[@role='tab' and contains(., 'XMoE chat')]")))
        assert tab.get_attribute("aria-selected") == "true"  # the chat tab is the first, open tab
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#xmoe-message textarea")))
        box.send_keys(QUESTION, Keys.ENTER)
        chat = driver.find_element(By.ID, "xmoe-chat")
        WebDriverWait(driver, 90).until(lambda d: "Paris" in chat.text)
        WebDriverWait(driver, 60).until(lambda d: "experts per token" in d.find_element(By.ID, "xmoe-stats").text)
        assert QUESTION in chat.text
        images = [i for i in driver.find_elements(By.TAG_NAME, "img") if (i.get_attribute("src") or "").startswith("data:image")]
        assert images, "the routing heatmap is not on the page"
