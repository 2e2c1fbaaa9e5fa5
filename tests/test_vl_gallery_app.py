"""The MoIIE, MoTE and MoE-LLaVA gallery tabs, running: driven through gradio_client (pick an easy-VQA sample, ask,
check the answer and the per-modality routing table against the model recomputed here; bad requests
get errors and the next good one works; MoTE's memory line against `vl_demo.expert_memory`) and
rendered in headless Chromium. One server for the module; each shipped system loads once."""
import re

import pytest
import gallery_server
import routing_reference
from headless_chromium import chromium

from zoo.pipelines import vl_demo

pytestmark = pytest.mark.slow
SYSTEMS = ["moiie", "mote", "moe_llava"]
SAMPLE = 0  # easy-VQA test question 0


gallery_url, client = gallery_server.tab_fixtures("zoo.apps.moiie_tab", "zoo.apps.mote_tab", "zoo.apps.moe_llava_tab")


def key(system: str) -> str:
    """The tab's endpoint / element name for a system (dashes as underscores)."""
    return system.replace("-", "_")


def pick_sample(client, system: str, index: int = SAMPLE) -> tuple[str, str]:
    """The dropdown's endpoint: choice -> (image file served by the app, question)."""
    _, question, expected = vl_demo.easyvqa_samples()[index]
    image, asked = client.predict(f"{index}: {question} ({expected})", api_name=f"/{key(system)}_sample")
    assert asked == question
    return image, question


def ask(client, system: str, image, question: str):
    from gradio_client import handle_file

    return client.predict(None if image is None else handle_file(image), question, api_name=f"/{key(system)}_answer")


def reference_routing_rows(system: str, image, question: str) -> list[list]:
    model, processor, _ = vl_demo.get_system(system)
    return routing_reference.routing_rows(model, processor(images=[image], text=processor.prompt(question)),
                                          ("image", "text"))


def teacher_forced_reply_is_greedy(system: str, image, question: str, reply: str) -> bool:
    model, processor, _ = vl_demo.get_system(system)
    batch = processor(images=[image], text=processor.prompt(question, answer=reply))
    return routing_reference.reply_is_greedy(model, batch, processor.tokenizer(reply, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("system", SYSTEMS)
def test_sample_answer_and_routing_table_match_the_model(client, system):
    image, question = pick_sample(client, system)
    reply, summary, table = ask(client, system, image, question)

    expected = vl_demo.answer(system, image, question)
    assert reply == expected["answer"] and reply.strip()
    assert teacher_forced_reply_is_greedy(system, image, question, reply)
    truth = vl_demo.easyvqa_samples()[SAMPLE][2]
    print(f"{system}: {question!r} -> {reply!r} (ground truth {truth!r})")

    table = table["value"]  # the tab returns a gr.update (headers change with the expert count)
    assert table["headers"] == expected["headers"]
    rows = table["data"]
    reference = reference_routing_rows(system, image, question)
    assert [r[:3] for r in rows] == [r[:3] for r in reference]
    assert {r[1] for r in rows} == {"image", "text"} and all(r[2] > 0 for r in rows)
    for got, want in zip(rows, reference):
        assert got[3:] == pytest.approx(want[3:], abs=1.5e-3), got[:2]  # the table rounds to 3 decimals
    for name in ("image", "text"):
        assert f"**{name} tokens** → experts" in summary
    if system == "moiie":  # MoIIE's split: image tokens never reach the intra-text expert and vice versa
        from zoo.models.moiie import expert_groups

        config = vl_demo.get_system(system)[0].config
        groups = config.expert_groups or expert_groups(config.num_experts)
        assert all(r[3 + e] == 0 for r in rows if r[1] == "image" for e in groups["text"])
        assert all(r[3 + e] == 0 for r in rows if r[1] == "text" for e in groups["image"])


@pytest.mark.parametrize("system", SYSTEMS)
def test_bad_requests_are_refused_and_the_next_good_one_works(client, system, tmp_path):
    from gradio_client.exceptions import AppError

    image, question = pick_sample(client, system)
    not_image = tmp_path / "notes.png"
    not_image.write_text("a text file with an image's name")  # refused by gradio's Image preprocessing (PIL)
    for bad_image, bad_question, message in ((None, question, "no image"), (image, "   ", "question is empty"),
                                             (str(not_image), question, "cannot identify image file")):
        with pytest.raises(AppError, match=message):
            ask(client, system, bad_image, bad_question)
    reply, _, table = ask(client, system, image, question)
    assert reply == vl_demo.answer(system, image, question)["answer"] and table["value"]["data"]


def test_mote_memory_line_matches_expert_memory(client):
    memory = vl_demo.expert_memory(vl_demo.get_system("mote")[0])
    line = client.predict(api_name="/mote_memory")
    ternary, bf16 = (float(x) for x in re.findall(r"\*\*([\d.]+) MB\*\*", line))
    assert ternary == pytest.approx(memory["ternary_mb"], abs=0.005)
    assert bf16 == pytest.approx(memory["bf16_mb"], abs=0.005)
    assert f"{memory['bits_per_weight']:.3f} bits/weight" in line
    assert f"({memory['bf16_mb'] / memory['ternary_mb']:.1f}x)" in line
    # independent count from the config: every MoE layer holds E experts of 3 H x I matrices
    model = vl_demo.get_system("mote")[0]
    text = model.config.text_config
    weights = len(model.moe_layer_ids) * model.config.num_experts * 3 * text.hidden_size * text.intermediate_size
    assert memory["bf16_mb"] == pytest.approx(2 * weights / 1e6)
    assert 2.0 <= memory["bits_per_weight"] <= 2.1


@pytest.mark.browser
@pytest.mark.parametrize("system, title", [("moiie", "MoIIE"), ("mote", "MoTE"), ("moe_llava", "MoE-LLaVA")])
def test_tab_renders_and_answers_in_chromium(gallery_url, system, title):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    path, question, _ = vl_demo.easyvqa_samples()[SAMPLE]
    expected = vl_demo.answer(system, path, question)["answer"]
    with chromium() as driver:
        driver.get(gallery_url)
        wait = WebDriverWait(driver, 60)
        wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[@role='tab' and contains(., '{title}')]"))).click()
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#{key(system)}-image input[type=file]")))
        upload.send_keys(path)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#{key(system)}-image img")))
        driver.find_element(By.CSS_SELECTOR, f"#{key(system)}-question textarea").send_keys(question)
        driver.find_element(By.ID, f"{key(system)}-ask").click()
        answer_box = driver.find_element(By.CSS_SELECTOR, f"#{key(system)}-answer textarea")
        WebDriverWait(driver, 90).until(lambda d: answer_box.get_attribute("value"))
        assert answer_box.get_attribute("value") == expected
        routing = driver.find_element(By.ID, f"{key(system)}-routing")
        WebDriverWait(driver, 30).until(lambda d: "image" in routing.text and "text" in routing.text)
        if system == "mote":
            driver.find_element(By.ID, "mote-show-memory").click()
            memory = vl_demo.expert_memory(vl_demo.get_system("mote")[0])
            shown = driver.find_element(By.ID, "mote-memory")
            WebDriverWait(driver, 30).until(lambda d: f"{memory['ternary_mb']:.2f} MB" in shown.text)
