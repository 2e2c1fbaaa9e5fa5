"""`zoo train {moiie,mote,moe_llava,dense_vl} --recipe tiny`: easy-VQA, SmolLM2-135M + MobileNetV2.

    stage 1  projector only (tower + LLM frozen, dense LLM), lr 3e-3   -- identical for every system, so
             its checkpoint is shared: the first system to run it saves it, the others resume from it
    stage 2  upcycle the system's MoE layers from the dense FFNs, then train projector + routers +
             per-expert LoRA deltas (rank 8) on the same data, lr 1e-3
    eval     easy-VQA test, a fixed 500-question subset (seed 0), greedy exact match

Runs through accelerate (bf16 autocast where the CPU has native bf16, else fp32: zoo.core.precision) with tqdm bars; every `save_every` steps a checkpoint
(trainable tensors + optimizer + scheduler + step + RNG, one file written atomically: pipelines.checkpoints)
is written, and `--resume` continues from the newest one.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.core.precision import mixed_precision
from zoo.core.validation import check_positive_int
from zoo.integrations.assets import cache_dir

from . import vl_easyvqa as vqa
from .checkpoints import Checkpoints
from .train import TrainOptions, cpu_accelerator, evaluation, recipe, release

TINY = {"stage1_steps": 100, "stage2_steps": 200, "batch_size": 32, "lr1": 3e-3, "lr2": 1e-3,
        "eval_questions": 500, "save_every": 40}


def run_stage(model, data, names, steps, lr, batch_size, directory: Path, resume: bool, seed: int, label: str,
              require_checkpoint: bool = False, save_every: int | None = None):
    """Train `names` for `steps`; checkpoints under `directory` (pipelines.checkpoints). `resume`: continue
    from the newest checkpoint there if any (required when `require_checkpoint`); without, older ones are
    deleted. Returns the mean loss of the last 20 steps."""
    save_every = TINY["save_every"] if save_every is None else save_every
    vqa.set_trainable(model, names)
    trainable = {n: p for n, p in model.named_parameters() if n in set(names)}
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    accelerator = cpu_accelerator(mixed_precision=mixed_precision())
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoints = Checkpoints(directory, {"names": sorted(trainable), "steps": steps, "lr": lr,
                                          "batch_size": batch_size, "seed": seed})
    if not resume:
        checkpoints.clear()
    step, extra = checkpoints.resume(trainable, optimizer, scheduler, required=resume and require_checkpoint)
    rng = random.Random(seed * 1000)
    for _ in range(step):  # replay the draws already taken: a resumed run sees the batches of an uninterrupted one
        rng.sample(range(len(data)), batch_size)
    losses: list[float] = list(extra.get("recent_losses", []))
    model.train()
    bar = tqdm(total=steps, initial=step, desc=label, unit="step")
    while step < steps:
        batch = data.batch(rng.sample(range(len(data)), batch_size))
        with accelerator.autocast():
            out = model(**batch)
        accelerator.backward(out.loss)
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
        step += 1
        losses.append(out.loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if step % save_every == 0 or step == steps:
            checkpoints.save(step, trainable, optimizer, scheduler, recent_losses=losses[-20:])
    bar.close()
    release(accelerator, model)
    return sum(losses[-20:]) / max(1, len(losses[-20:]))


def train_system(system: str, options: TrainOptions) -> dict:
    settings = {**TINY, **{k: v for k, v in options.extra.items() if k in TINY}}
    check_positive_int(f"{system}/tiny", **{k: settings[k] for k in ("stage1_steps", "stage2_steps",
                                                                             "batch_size", "eval_questions", "save_every")})
    if options.max_steps is not None:
        settings["stage1_steps"] = settings["stage2_steps"] = options.max_steps
    root = Path(options.output_dir or cache_dir() / "runs" / "vl-easyvqa")
    torch.manual_seed(options.seed)
    started = time.time()
    lm, tokenizer = vqa.load_base()

    # stage 1: projector only on the dense model (shared by every system)
    stage1_dir = root / (f"stage1-{settings['stage1_steps']}x{settings['batch_size']}-lr{settings['lr1']}"
                         f"-tokens{vqa.IMAGE_TOKENS}-seed{options.seed}")
    dense, processor = vqa.build("dense_vl", lm, tokenizer, moe_layers="none")
    train_data = vqa.EasyVqa("train", processor)
    stage1_done = stage1_dir / "projector.safetensors"
    stage1_finished_before = stage1_done.is_file()
    if stage1_finished_before:
        print(f"stage 1: reusing {stage1_done}")
        vqa.load_parts(dense, stage1_done)
    else:
        run_stage(dense, train_data, [n for n in vqa.trainable_names(dense) if n.startswith("connector.")],
                  settings["stage1_steps"], settings["lr1"], settings["batch_size"], stage1_dir, True, options.seed,
                  "stage 1 (projector)", require_checkpoint=options.resume,  # --resume of a run killed in stage 1
                  save_every=settings["save_every"])
        vqa.save_parts(dense, stage1_done)
    connector_state = dense.connector.state_dict()
    del dense

    # stage 2: upcycle and train projector + routers + expert LoRA
    model, processor = vqa.build(system, lm, tokenizer)
    model.connector.load_state_dict(connector_state)
    stage2_dir = root / f"{system}-stage2"
    names = vqa.trainable_names(model)
    trainable = vqa.set_trainable(model, names)
    # with --resume, stage 2 must have its checkpoint unless stage 1 was (re)trained just now
    loss = run_stage(model, train_data, names, settings["stage2_steps"], settings["lr2"], settings["batch_size"],
                     stage2_dir, options.resume, options.seed, f"stage 2 ({system})",
                     require_checkpoint=stage1_finished_before, save_every=settings["save_every"])
    train_minutes = (time.time() - started) / 60

    test = vqa.EasyVqa("test", processor, limit=settings["eval_questions"])
    acc = vqa.accuracy(model, test, progress=lambda it: tqdm(it, desc="easy-VQA test", unit="batch"))
    metadata = {"system": system, "easyvqa_test_accuracy": acc, "eval_questions": len(test),
                "stage1_steps": settings["stage1_steps"], "stage2_steps": settings["stage2_steps"],
                "batch_size": settings["batch_size"], "trainable_params": trainable,
                "train_minutes": round(train_minutes, 1), "final_train_loss": round(loss, 4)}
    parts = root / f"{system}-easyvqa-tiny.safetensors"
    vqa.save_parts(model, parts, metadata)
    if options.extra.get("ship"):  # into the package: models/<system>/trained/ (zoo.models.trained_dir)
        shutil.copy(parts, vqa.shipped_path(system))
    (root / f"{system}-results.json").write_text(json.dumps(metadata, indent=2))
    return {**metadata, "parts": str(parts)}


for _system in ("moiie", "mote", "moe_llava", "dense_vl"):
    recipe(_system, "tiny")(lambda options, _s=_system: train_system(_s, options))


def evaluate_shipped(system: str, questions: int | None = TINY["eval_questions"]) -> dict:
    model, processor, metadata = vqa.load_shipped(system)
    test = vqa.EasyVqa("test", processor, limit=questions)
    return {"system": system, "easyvqa_test_accuracy": vqa.accuracy_report(model, test), "eval_questions": len(test),
            "trained": metadata}


def _evaluate_shipped_only(system: str, weights: str | None) -> dict:
    if weights is not None:
        raise ValueError(f"zoo eval {system} evaluates the shipped parts only; --weights is not supported for it")
    return evaluate_shipped(system)


for _system in ("moiie", "mote", "moe_llava", "dense_vl"):
    evaluation(_system)(lambda weights, _s=_system: _evaluate_shipped_only(_s, weights))
