"""Uni-MoE's tiny recipe (zoo.pipelines.train_unimoe) end to end on tiny bases (tests.tiny_unimoe: a tiny Llama,
CLIP and random Whisper; a few examples per modality): what each stage trains, the stage-3 experts' frozen FFNs
against the merged stage-2 ones, the cached-hidden shortcut against a full forward, exact resume after a kill,
and the saved parts rebuilding the very models the run evaluated."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_unimoe import CLIP, WHISPER, dense_llm, tiny_processor
from zoo.pipelines import train_unimoe as tu
from zoo.pipelines.checkpoints import checkpoint_steps
from zoo.pipelines import unimoe_features as uf
from zoo.pipelines.unimoe_data import MODALITIES, Example

pytestmark = pytest.mark.usefixtures("single_thread")
ANSWERS = ["yes", "no", "one", "two three"]
SETTINGS = {**tu.TINY, "top_layers": 1, "lora_rank": 2, "lora_alpha": 4, "batch_size": 3, "stage1_steps": 3,
            "stage2_steps": 2, "stage3_steps": 3, "save_every": 1, "warmup_steps": 1, "eval_batch_size": 4,
            "lr1": 1e-2, "lr2": 1e-2, "lr3": 1e-2, "lr_dense": 1e-2}


def tiny_bases() -> uf.Bases:
    processor = tiny_processor()
    return uf.Bases(dense_llm(processor), processor, {"vision_tower": CLIP, "audio_tower": WHISPER})


def tiny_examples(split: str, n: int) -> list[Example]:
    """n examples per modality with random media (images 40 px, 0.3-0.6 s clips, 4-frame videos), tiny-vocabulary text."""
    rng = np.random.default_rng(["train", "validation", "test"].index(split))
    out = []
    for modality in MODALITIES:
        for i in range(n):
            media = {}
            if "image" in modality:
                media["image"] = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            if "speech" in modality or modality == "audio":
                media["audio"] = (0.1 * rng.standard_normal(int(16000 * rng.uniform(0.3, 0.6)))).astype(np.float32)
            if modality == "video":
                media["video"], media["fps"] = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8), 4.0
            out.append(Example(modality, "tiny", "is it", "is it one", ANSWERS[(i + len(modality)) % 4], **media))
    return out


def tiny_run(root, resume=False, models_out=None):
    examples = {"train": tiny_examples("train", 4), "validation": tiny_examples("validation", 2),
                "test": tiny_examples("test", 2)}
    return tu.run_recipe(tiny_bases(), examples, SETTINGS, root, resume=resume, models_out=models_out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("unimoe")
    models = {}
    return root, tiny_run(root, models_out=models), models


def parts(root, stage) -> dict[str, torch.Tensor]:
    return load_file(str(root / stage / "parts.safetensors"))


def test_the_results_hold_every_system_per_modality_and_the_routing_table(run):
    _, results, _ = run
    for split in ("validation", "test"):
        accuracy = results[split]["accuracy"]
        assert set(accuracy) == {"uni_moe", "dense", "expert:base", "expert:image", "expert:speech",
                                 "expert:video_audio", "majority"}
        for scores in accuracy.values():
            assert list(scores) == [*MODALITIES, "mean", "worst"] and scores["worst"] == min(scores[m] for m in MODALITIES)
        routing = results[split]["routing"]
        assert routing["sources"] == ["base", "image", "speech", "video_audio"]
        assert {"tokens:text", "tokens:image", "tokens:audio", "tokens:video", *MODALITIES} == set(routing["shares"])
        for shares in routing["shares"].values():
            assert len(shares) == 4 and sum(shares) == pytest.approx(1, abs=1e-3)
    assert results["dense_steps"] == 3 * SETTINGS["stage2_steps"] + SETTINGS["stage3_steps"]
    assert results["stages"]["dense"]["steps"] == results["dense_steps"]
    assert "| uni_moe |" in tu.format_tables(results) and "| tokens:image |" in tu.format_tables(results)


def test_each_stage_trains_only_its_parts(run):
    root, _, models = run
    bases = tiny_bases()
    for stage, model in [("stage1", models["expert:base"]), ("stage2-speech", models["expert:speech"]),
                         ("stage3", models["uni_moe"]), ("dense", models["dense"])]:
        saved = parts(root, stage)
        assert sorted(saved) == sorted(tu.trainable_names(model, stage))
        kinds = {"connector" if n.startswith(tu.CONNECTOR_PREFIXES) else "router" if ".router." in n else "lora"
                 for n in saved}
        assert kinds == {"stage1": {"connector"}, "stage3": {"router", "lora"}}.get(stage, {"lora"})
        fresh = dict(tu.build_stage_model(bases, SETTINGS, stage).named_parameters())
        if stage != "stage1":  # later stages carry the stage-1 connectors, frozen (checked below)
            fresh = {n: p for n, p in fresh.items() if not n.startswith(tu.CONNECTOR_PREFIXES)}
        if stage == "stage3":  # its frozen FFNs are the stage-2 sources (next test); the rest is the fresh build
            fresh = {n: p for n, p in fresh.items() if not n.endswith(("experts.gate_up_proj", "experts.down_proj"))}
        trained = dict(model.named_parameters())
        for name, value in fresh.items():
            if name not in saved:
                assert torch.equal(trained[name], value), f"{stage} changed frozen {name}"
        assert any(not torch.equal(trained[n], fresh[n]) for n in saved), f"{stage} trained nothing"
        if stage != "stage1":
            for name, value in dict(models["expert:base"].named_parameters()).items():
                if name.startswith(tu.CONNECTOR_PREFIXES):
                    assert torch.equal(trained[name], value), f"{stage} connector {name} is not stage 1's"


def test_stage3_experts_frozen_ffns_are_the_merged_stage2_ffns(run):
    _, _, models = run
    uni_moe, base = models["uni_moe"], models["expert:base"]
    for layer, ffn in zip(uni_moe.moe_layer_ids, uni_moe.moe_feed_forwards()):
        bank = ffn.moe.experts
        mlp = base.language_model.model.layers[layer].mlp
        torch.testing.assert_close(bank.gate_up_proj[0], torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), rtol=0, atol=0)
        torch.testing.assert_close(bank.down_proj[0], mlp.down_proj.weight, rtol=0, atol=0)
        for e, source in enumerate(tu.SOURCES[1:], start=1):
            expert = models[f"expert:{source}"].decoder_layers[layer].mlp.moe.experts  # one LoRA over the LLM's FFN
            gate_up = expert.gate_up_proj + expert.scaling * expert.gate_up_lora_B[0] @ expert.gate_up_lora_A[0]
            down = expert.down_proj + expert.scaling * expert.down_lora_B[0] @ expert.down_lora_A[0]
            torch.testing.assert_close(bank.gate_up_proj[e], gate_up, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(bank.down_proj[e], down, rtol=1e-6, atol=1e-6)
            assert not torch.allclose(bank.down_proj[e], bank.down_proj[0])  # stage 2 did move the source


def test_the_cached_hidden_path_equals_a_full_forward(run):
    """Towers + lower layers cached, upper layers run alone: the same supervised logits as the model on raw inputs."""
    _, _, models = run
    bases, examples = tiny_bases(), tiny_examples("test", 1)
    model = models["uni_moe"]
    processor = bases.processor
    encoded = uf.encode(examples, model, processor)
    hidden = uf.lower_hidden(model, encoded, tu.top_layers(bases, SETTINGS)[0], bases.pad_id)
    for i, (example, item) in enumerate(zip(examples, encoded)):
        media = uf.MEDIA[example.modality]
        inputs = processor(text=processor.prompt(example.prompt, media=media),
                           images=[example.image] if "image" in media else None,
                           videos=[example.video] if "video" in media else None, video_fps=example.fps,
                           audio=[example.audio] if "audio" in media else None, sampling_rate=16000)
        inputs["input_ids"] = torch.tensor([item.prompt_ids + item.answer_ids])  # the prompt + the supervised answer
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["labels"] = hidden.batch([i])["labels"]
        with torch.no_grad():
            full = model(**inputs).logits
            cached = uf.upper_forward(model, hidden.batch([i])).logits
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4, msg=example.modality)


class Killed(Exception):
    pass


@pytest.mark.parametrize("target, kill_at", [("collate", 2), ("upper_forward", 9)])  # in stage 1; in stage 3
def test_a_run_killed_mid_stage_then_resumed_ends_where_an_uninterrupted_one_does(run, tmp_path, monkeypatch,
                                                                                   target, kill_at):
    straight_root, straight, _ = run
    real, calls = getattr(tu, target), [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(tu, target, dying)
    with pytest.raises(Killed):
        tiny_run(tmp_path)
    monkeypatch.undo()
    assert checkpoint_steps(tmp_path / ("stage1" if target == "collate" else "stage3"))
    resumed = tiny_run(tmp_path, resume=True)
    for stage in tu.STAGES:
        want, got = parts(straight_root, stage), parts(tmp_path, stage)
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=f"{stage} {name}")
    assert resumed["test"] == straight["test"]


def test_the_saved_parts_rebuild_the_evaluated_models(run, tmp_path):
    root, results, models = run
    folder = tmp_path / "trained"
    folder.mkdir()
    tu.ship(root, folder)
    rebuilt = tu.load_stage_models(tiny_bases(), SETTINGS, lambda stage: folder / f"{tu.SHIPPED_PREFIX}{stage}.safetensors")
    assert set(rebuilt) == set(models)
    for name, model in models.items():
        want = model.state_dict()
        for key, value in rebuilt[name].state_dict().items():
            assert torch.equal(value, want[key]), f"{name}: {key}"


def test_the_batch_schedule_is_fixed_by_the_seed_and_never_repeats_a_row_in_a_batch():
    pool = list(range(10, 17))
    schedule = tu.draw_schedule(pool, 6, 3, seed=5)
    assert schedule == tu.draw_schedule(pool, 6, 3, seed=5) != tu.draw_schedule(pool, 6, 3, seed=6)
    assert all(len(set(rows)) == 3 and set(rows) <= set(pool) for rows in schedule)
    seen = [r for rows in schedule for r in rows]
    assert max(seen.count(r) for r in pool) - min(seen.count(r) for r in pool) <= 1
