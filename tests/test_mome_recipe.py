"""The MoME recipe (zoo.pipelines.train_mome): batches, the rate schedule, exact resume, and a real
smoke run through the CLI's recipe on the packaged SmolLM2 + Whisper tiny.en (slow)."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_mome import RATES, tiny_model, tiny_processor
from zoo.multimodal.matryoshka import compressed_lengths
from zoo.pipelines import train_mome as tm
from zoo.pipelines.train import TrainOptions, get_recipe

WORDS = ["hello world", "one two three", "yes", "the speech is on", "four five six seven"]


def tiny_speech(n: int = 10, channels: int = 16, seed: int = 0) -> tm.EncodedSpeech:
    generator = torch.Generator().manual_seed(seed)
    frames = [torch.randn(int(torch.randint(9, 40, (1,), generator=generator)), channels, generator=generator)
              for _ in range(n)]
    return tm.EncodedSpeech(frames, [WORDS[i % len(WORDS)] for i in range(n)], [f"tiny:{i}" for i in range(n)])


def test_a_batch_has_the_placeholders_of_its_rate_and_labels_on_the_transcript_only():
    processor, data = tiny_processor(), tiny_speech()
    rows = [0, 3, 4]
    for rate in RATES:
        batch = tm.batch_for_rate(data, rows, rate, processor)
        want = compressed_lengths(torch.tensor([len(data.frames[i]) for i in rows]), rate)
        assert (batch["input_ids"] == processor.audio_token_id).sum(1).tolist() == want.tolist()
        for row, i in enumerate(rows):
            supervised = batch["labels"][row][batch["labels"][row] != -100].tolist()
            answer = processor.tokenizer(data.texts[i], add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
            assert supervised == answer
    left = tm.batch_for_rate(data, rows, 4, processor, with_answers=False)
    assert "labels" not in left and left["attention_mask"][:, -1].all()  # left-padded for generation


def test_the_schedule_rotates_through_every_rate_equally():
    schedule = [tm.rates_of_step(s, [2, 4, 8, 16], 2) for s in range(8)]
    assert schedule[:2] == [[2, 4], [8, 16]]
    counts = {r: sum(r in step for step in schedule) for r in (2, 4, 8, 16)}
    assert set(counts.values()) == {4}


class Killed(Exception):
    pass


def train_tiny(directory, steps, resume=False, monkeypatch=None, kill_at_batch=None):
    """Train the tiny model; with `kill_at_batch` the run dies when it builds that batch (a kill mid-step)."""
    torch.manual_seed(0)
    model = tiny_model(trained=False).train()
    data, processor = tiny_speech(), tiny_processor()
    schedule = [tm.rates_of_step(s, RATES, 2) for s in range(steps)]
    settings = {**tm.TINY, "batch_size": 4, "save_every": 1}
    if kill_at_batch is not None:
        real, calls = tm.batch_for_rate, [0]

        def dying(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at_batch:
                raise Killed
            return real(*args, **kwargs)

        monkeypatch.setattr(tm, "batch_for_rate", dying)
    tm.train(model, data, processor, schedule, settings, directory, resume, 0, "tiny")
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kill_at_batch", [3, 5, 8])  # in step 2, at the start of step 3, in the last batch
def test_a_run_killed_anywhere_then_resumed_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch, kill_at_batch):
    straight = train_tiny(tmp_path / "straight", steps=4)
    with pytest.raises(Killed):
        train_tiny(tmp_path / "run", steps=4, monkeypatch=monkeypatch, kill_at_batch=kill_at_batch)
    monkeypatch.undo()
    resumed = train_tiny(tmp_path / "run", steps=4, resume=True)
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)
    moved = train_tiny(tmp_path / "one", steps=1)
    assert any(not torch.equal(moved[n], straight[n]) for n in straight)  # training does change the parts


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_tiny(tmp_path, steps=2, resume=True)


def test_max_steps_must_be_positive():
    with pytest.raises(ValueError, match="--max-steps"):
        tm._settings(TrainOptions(max_steps=0))


@pytest.mark.slow
def test_the_recipe_trains_and_reports_wer_per_rate_on_both_held_out_sets(tmp_path):
    result = get_recipe("mome", "tiny")(TrainOptions(output_dir=tmp_path, max_steps=1,
                                                     extra={"train_utterances": 16, "eval_limit": 4}))
    for name in ("asterisk", "pyannote"):
        assert set(result["wer"][name]) == {str(r) for r in tm.TINY["rates"]}
        assert all(0.0 <= w for w in result["wer"][name].values())
    shares = result["wer"]["audio_expert_share"]
    assert set(shares) == {str(r) for r in tm.TINY["rates"]}
    for share in shares.values():
        assert len(share) == tm.TINY["num_routed_experts"] and abs(sum(share) - 1) < 1e-5
    # the saved parts load back into a fresh model and are exactly the trained tensors
    lm, processor = tm.load_bases()
    fresh = tm.build_mome(lm, processor, tm.TINY)
    tm.load_trained(fresh, tmp_path / "mome-tiny.safetensors")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "mome-tiny.safetensors"))
    params = dict(fresh.named_parameters())
    assert all(torch.equal(params[n].to(torch.bfloat16), v) for n, v in state.items())
