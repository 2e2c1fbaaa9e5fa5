"""The shipped Uni-MoE tiny parts (models/unimoe/trained/) on the real SmolLM2 + MobileNetV2 + Whisper tiny.en:
`zoo eval unimoe` recomputes the whole per-modality table (Uni-MoE, the dense baseline, each stage-2 expert
alone, the majority baselines) and the routing table on the test split, and they must be what the README and
the model card print (the results file shipped with the parts)."""
import json

import pytest

from tests.test_causality import LEAK_TOLERANCE, future_token_leak

pytestmark = pytest.mark.slow

# Answers that flip between CPUs: the parts were trained and scored with bf16 autocast on an AMD EPYC
# (avx512_bf16); an Intel Xeon with AMX bf16 kernels accumulates in another order and borderline answers change.
# Recomputed there (100 questions per modality): Uni-MoE .39 / .38 / .08 / .43 / .30 against the shipped
# .40 / .38 / .07 / .42 / .32 (image / speech+image / speech / video / audio), dense .42 / .35 / .08 / .46 / .31
# against .44 / .34 / .09 / .44 / .33, and the video+audio expert alone on audio .23 against .28: at most 5
# answers of 100. On the machine kind that wrote the table the recomputation was exact (session 5's CI).
CROSS_MACHINE_TOLERANCE = 0.06


@pytest.fixture(scope="module")
def evaluated():
    from zoo.models import trained_dir
    from zoo.pipelines.train_unimoe import SHIPPED_PREFIX, evaluate_shipped

    shipped = json.loads((trained_dir("unimoe") / f"{SHIPPED_PREFIX}results.json").read_text())
    return evaluate_shipped(None)["test"], shipped["test"]


def test_the_shipped_parts_reproduce_the_per_modality_table(evaluated):
    recomputed, shipped = evaluated
    assert recomputed["n"] == shipped["n"] and min(shipped["n"].values()) >= 100
    for system, scores in shipped["accuracy"].items():
        assert recomputed["accuracy"][system] == pytest.approx(scores, abs=CROSS_MACHINE_TOLERANCE), system


def test_the_shipped_parts_reproduce_the_routing_table(evaluated):
    recomputed, shipped = evaluated
    assert recomputed["routing"]["sources"] == shipped["routing"]["sources"]
    for group, shares in shipped["routing"]["shares"].items():
        assert recomputed["routing"]["shares"][group] == pytest.approx(shares, abs=1e-3), group


def test_the_trained_systems_beat_the_majority_answer(evaluated):
    """What the table must show to be worth shipping: both trained systems learn from the media (well above
    always answering the commonest training answer) in the image, video and audio modalities."""
    accuracy = evaluated[0]["accuracy"]
    for system in ("uni_moe", "dense"):
        for modality in ("image", "video", "audio"):
            assert accuracy[system][modality] >= accuracy["majority"][modality] + 0.1, (system, modality)


def test_the_shipped_model_is_causal():
    from zoo.pipelines.train_unimoe import load_shipped

    model, _, _ = load_shipped()
    assert future_token_leak(model) < LEAK_TOLERANCE


def test_the_model_card_prints_the_recomputed_table(evaluated):
    from zoo.pipelines.train_unimoe import format_tables
    from zoo.pipelines.unimoe_card import render

    def rows(text: str) -> dict[str, list[float]]:
        cells = (line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| "))
        return {c[0]: [float(x) for x in c[1:]] for c in cells if c[0] in ("uni_moe", "dense", "majority")}

    printed, recomputed = rows(render()), rows(format_tables({"test": evaluated[0]}))
    assert set(printed) == set(recomputed) == {"uni_moe", "dense", "majority"}
    for system, values in recomputed.items():
        assert printed[system] == pytest.approx(values, abs=CROSS_MACHINE_TOLERANCE), system


def test_the_shipped_system_round_trips_through_one_folder_in_a_fresh_process(tmp_path):
    """The trained Uni-MoE as one complete save_pretrained folder (config, processor, weights with every expert's
    frozen FFN), loaded by AutoModelForImageTextToText / AutoProcessor in another process: the same logits."""
    import subprocess
    import sys

    import torch
    from PIL import Image

    from zoo.multimodal.audio import load_audio
    from zoo.pipelines import unimoe_demo

    model, processor, _ = unimoe_demo.get_unimoe()
    sample = next(s for s in unimoe_demo.samples() if s["modality"] == "speech+image")
    batch = processor(text=processor.prompt(sample["question"], media=("image", "audio")),
                      images=[Image.open(sample["image"]).convert("RGB")], audio=[load_audio(sample["audio"]).numpy()],
                      sampling_rate=16000)
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    torch.save({**batch, "expected": expected}, tmp_path / "probe.pt")
    code = f"""
import torch, zoo
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained({str(tmp_path)!r}).eval()
processor = AutoProcessor.from_pretrained({str(tmp_path)!r})
probe = torch.load({str(tmp_path / "probe.pt")!r}, weights_only=True)
expected = probe.pop("expected")
with torch.no_grad():
    logits = model(**probe).logits
print(type(model).__name__, type(processor).__name__, float((logits - expected).abs().max()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    model_class, processor_class, difference = out.stdout.split()[-3:]
    assert (model_class, processor_class) == ("UniMoeForConditionalGeneration", "UniMoeProcessor")
    assert float(difference) < 1e-4  # float noise; logits reach ~30
