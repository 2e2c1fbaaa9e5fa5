"""`pipelines.train_vl.run_stage` resumed after a crash continues exactly: 2N steps straight == N steps,
a crash, a new model object, and `resume=True` to 2N (trainable tensors, AdamW state, step count).

Tiny MoIIE (4-layer Llama, random 32 px MobileNetV2 tower, LoRA experts) on synthetic question/answer
samples shaped like `vl_easyvqa.EasyVqa.batch`; a few seconds."""
import pytest
import torch

import zoo  # noqa: F401
from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration
from zoo.pipelines import train_vl
from zoo.pipelines import vl_easyvqa as vqa
from zoo.pipelines.checkpoints import Checkpoints, checkpoint_steps

LLAMA = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 48,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}
TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 32}  # 1x1 grid -> one image token
IMAGE_ID, PAD_ID = 63, 0
HALF, BATCH = 3, 4  # N steps, then N more


class SyntheticVqa:
    """24 samples: one image token + a 5-token prompt, a 2-token answer; same batch layout as EasyVqa."""

    def __init__(self, size: int = 24):
        generator = torch.Generator().manual_seed(0)
        self.prompts = torch.randint(1, 60, (size, 5), generator=generator)
        self.answers = torch.randint(1, 60, (size, 2), generator=generator)
        self.pixels = torch.randn(size, 3, 32, 32, generator=generator)

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices) -> dict:
        indices = list(indices)
        image = torch.full((len(indices), 1), IMAGE_ID)
        ids = torch.cat([image, self.prompts[indices], self.answers[indices]], dim=1)  # [B, 8]
        labels = torch.full_like(ids, -100)
        labels[:, -2:] = self.answers[indices]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                "pixel_values": self.pixels[indices]}


class Crash(Exception):
    pass


class CrashingData(SyntheticVqa):
    """Dies when asked for batch number `after + 1`, like a killed process."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls = after, 0

    def batch(self, indices) -> dict:
        self.calls += 1
        if self.calls > self.after:
            raise Crash(f"killed before step {self.after + 1}")
        return super().batch(indices)


def fresh_model():
    """The same frozen base every time (a restarted process rebuilds it from the same weights)."""
    torch.manual_seed(0)
    config = MoiieConfig(text_config=LLAMA, vision_tower=TOWER, image_token_id=IMAGE_ID, expert_lora_rank=2)
    return MoiieForConditionalGeneration(config, load_tower_weights=False)


def run(model, data, directory, resume: bool):
    names = vqa.trainable_names(model)
    train_vl.run_stage(model, data, names, 2 * HALF, 1e-2, BATCH, directory, resume, seed=3, label="test")
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in set(names)}


def test_resumed_stage_matches_an_uninterrupted_one(tmp_path, monkeypatch, single_thread):
    monkeypatch.setitem(train_vl.TINY, "save_every", HALF)
    straight = run(fresh_model(), SyntheticVqa(), tmp_path / "straight", resume=False)

    with pytest.raises(Crash):
        run(fresh_model(), CrashingData(after=HALF), tmp_path / "crashed", resume=False)
    assert checkpoint_steps(tmp_path / "crashed") == [HALF]
    before_resume = {n: p.detach().clone() for n, p in fresh_model().named_parameters()}
    resumed = run(fresh_model(), SyntheticVqa(), tmp_path / "crashed", resume=True)

    assert any(not torch.equal(resumed[n], before_resume[n]) for n in resumed)  # it did train
    assert sorted(straight) == sorted(resumed) and any(".router." in n for n in straight)
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    end_straight, end_resumed = (Checkpoints(tmp_path / d, {}).load(2 * HALF, check_fingerprint=False)
                                 for d in ("straight", "crashed"))
    assert end_straight["step"] == end_resumed["step"] == 2 * HALF
    assert end_straight["scheduler"] == end_resumed["scheduler"]
    for a, b in zip(end_straight["optimizer"]["state"].values(), end_resumed["optimizer"]["state"].values()):
        assert int(a["step"]) == int(b["step"]) == 2 * HALF
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=0)
