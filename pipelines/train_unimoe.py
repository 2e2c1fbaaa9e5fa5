"""`zoo train unimoe --recipe tiny`: Uni-MoE's three stages, tiny and real, on frozen SmolLM2-135M-Instruct +
the packaged MobileNetV2 and Whisper tiny.en, with the mixed-modality data of pipelines.unimoe_data.

    data      mixed_examples: image / speech+image / speech / video / audio, train (all stages), validation
              (looked at while sizing the recipe) and test (reported; never trained or tuned on)
    features  towers once per example, then the frozen lower layers once per example (pipelines.unimoe_features)
    stage 1   connectors only (image projector; Q-Former queries + output Linear, its Whisper decoder frozen),
              LLM frozen and dense, on the whole mixture
    stage 2   one dense LoRA-adapted FFN per modality group: a LoRA (r, alpha) on the FFNs of the top
              `top_layers` decoder layers, trained on that group's examples only -- EXPERT_DATA; "base" is
              the LLM's own FFN, untrained. Each LoRA is merged into its FFNs: the expert's dense source.
    stage 3   Uni-MoE: those top layers become top-k-of-4 MoE layers whose expert e is the merged stage-2 FFN
              of SOURCES[e] (frozen) + its own LoRA; routers + expert LoRAs trained on the mixture
    dense     the baseline: one LoRA (same rank, same layers) trained on the same mixture for the budget of
              stages 2 + 3 together: as many optimizer steps of the same batch size, so as many examples
              (3 x stage2_steps + stage3_steps)
    eval      per modality, greedy exact match (teacher-forced: every answer token and the end of turn must
              be the argmax, which is exactly "greedy decoding reproduces the answer and stops") for Uni-MoE,
              the dense baseline, each stage-2 expert alone (base = the stage-1 model), majority baselines;
              and the routing table: per modality, the share of routed slots per expert over all MoE layers

Departures, for the CPU budget (pipelines.unimoe_features says why): LoRA / MoE on the top `top_layers`
layers only (the paper: every layer), few tokens (image pooled to 4, 8 Q-Former queries per clip, videos
as 4 frames pooled to one image's tokens), the connectors trained in stage 1 only (frozen after).
Through accelerate, bf16 autocast where the CPU has native bf16, else fp32 (zoo.core.precision); each stage checkpoints
every `save_every` steps (pipelines.checkpoints: one file, written to a temporary file and renamed) and
`--resume` continues it from the newest checkpoint with the same batches (the whole batch schedule is drawn
from the seed up front); a finished stage leaves its trained parts (`<stage>/parts.safetensors`, rounded to bf16 before anything uses them, so
the shipped files rebuild exactly the evaluated model) and is not run again.

Measured (2-core AMD EPYC with avx512_bf16, so bf16 autocast; TINY as below, espeak cache cold, another training running beside it): 1105 s
in all -- data + bases 4, towers 197, stage 1 264 (120 steps, 2.2 s/step), lower layers 287, stage 2 200 (3 x 60
steps), stage 3 51 (90 steps), dense 58 (270 steps), evaluation of 6 systems on validation + test 44. An idle run
with 60 stage-1 steps took 716 s on an AVX2 machine (fp32). `python -m zoo.pipelines.train_unimoe [results.json] [--split validation]` prints the tables.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.core.modalities import MODALITY_IDS
from zoo.core.precision import autocast, mixed_precision
from zoo.core.validation import check_positive_int
from zoo.integrations.assets import cache_dir

from . import unimoe_data as data
from .checkpoints import Checkpoints, checkpoint_steps
from .train import TrainOptions, cpu_accelerator, evaluation, recipe, release
from .trained_parts import load_parts, save_parts
from .unimoe_features import Bases, Hidden, cached_encode, collate, embed_cached, lower_hidden, real_bases, upper_forward

TINY = {
    "train_per_modality": 160, "validation_per_modality": 40, "test_per_modality": 100,
    "image_tokens": 4, "audio_queries": 8, "video_frames": 4,
    "top_layers": 8, "lora_rank": 8, "lora_alpha": 16, "num_experts_per_tok": 2,
    "balance_loss_coef": 0.0, "modality_l1_loss_coef": 0.0,
    "batch_size": 8, "stage1_steps": 120, "stage2_steps": 60, "stage3_steps": 90,
    "lr1": 2e-3, "lr2": 2e-3, "lr3": 1e-3, "lr_dense": 2e-3, "warmup_steps": 5,
    "save_every": 20, "eval_batch_size": 32,
}
# stage-2 experts: the examples each is trained on (the paper's speech expert also reads spoken image questions)
EXPERT_DATA = {"base": (), "image": ("image",), "speech": ("speech", "speech+image"), "video_audio": ("video", "audio")}
SOURCES = list(EXPERT_DATA)  # expert slot e of every MoE layer comes from SOURCES[e]
DESIGNATED = {"image_expert_indices": [1], "audio_expert_indices": [2, 3], "video_expert_indices": [3]}
STAGES = ("stage1", *(f"stage2-{s}" for s in SOURCES if EXPERT_DATA[s]), "stage3", "dense")
SHIPPED_PREFIX = "tiny-"  # models/unimoe/trained/tiny-<stage>.safetensors + tiny-results.json
CONNECTOR_PREFIXES = ("connector.", "audio_aligner.query_tokens", "audio_aligner.projector.")


# -- models of each stage -------------------------------------------------------------------------
def top_layers(bases: Bases, settings: dict) -> list[int]:
    count = settings["top_layers"]
    if not 1 <= count <= bases.num_layers:
        raise ValueError(f"top_layers must be in [1, {bases.num_layers}], got {count}")
    return list(range(bases.num_layers - count, bases.num_layers))


def build_stage_model(bases: Bases, settings: dict, stage: str, seed: int = 0):
    """A fresh model of `stage` ("stage1", "stage2-<source>", "stage3", "dense") around a copy of the frozen LLM.
    Its random parts (LoRA A, routers, Q-Former queries) are drawn from (seed, stage): a resumed run builds the
    stages it has not reached yet exactly as an uninterrupted run does."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(STAGES)}")
    torch.manual_seed(seed * len(STAGES) + STAGES.index(stage))
    lora = {"expert_lora_rank": settings["lora_rank"], "expert_lora_alpha": settings["lora_alpha"]}
    if stage == "stage1":
        return bases.build(moe_layers="none")
    if stage.startswith("stage2-") or stage == "dense":  # one expert, always chosen: the dense FFN + a LoRA
        return bases.build(moe_layers=top_layers(bases, settings), num_experts=1, num_experts_per_tok=1, **lora)
    if stage == "stage3":
        return bases.build(moe_layers=top_layers(bases, settings), num_experts=len(SOURCES),
                           num_experts_per_tok=settings["num_experts_per_tok"], expert_sources=list(SOURCES),
                           router_aux_loss_coef=settings["balance_loss_coef"],
                           modality_l1_loss_coef=settings["modality_l1_loss_coef"], **DESIGNATED, **lora)
    raise AssertionError(stage)


def trainable_names(model, stage: str) -> list[str]:
    """What each stage trains: the connectors (stage 1); the LoRA deltas (stage 2, dense); routers + expert LoRAs (3)."""
    names = [n for n, _ in model.named_parameters()]
    if stage == "stage1":
        return [n for n in names if n.startswith(CONNECTOR_PREFIXES)]
    lora = [n for n in names if ".mlp.moe.experts." in n and "_lora_" in n]
    if stage == "stage3":
        return lora + [n for n in names if ".mlp.moe.router." in n]
    return lora


def copy_connectors(source, target) -> None:
    """The stage-1 connectors into a later stage's model (they stay frozen there)."""
    state = {n: p for n, p in source.named_parameters() if n.startswith(CONNECTOR_PREFIXES)}
    with torch.no_grad():
        for name, param in target.named_parameters():
            if name in state:
                param.copy_(state[name])


@torch.no_grad()
def merged_source(bases: Bases, expert_model) -> torch.nn.Module:
    """The stage-2 expert as Uni-MoE's dense source: a copy of the frozen LLM whose top-layer FFNs are the
    frozen FFN + the trained LoRA delta, W' = W + (alpha / r) B A (gate and up share one pair over [gate; up])."""
    import copy

    from zoo.upcycling.ffn_adapters import adapter_for

    llm = copy.deepcopy(bases.language_model)
    adapter = adapter_for(llm.config)
    layers = adapter.decoder_layers(llm)
    for layer, ffn in zip(expert_model.moe_layer_ids, expert_model.moe_feed_forwards()):
        bank = ffn.moe.experts  # one expert over the shared frozen FFN
        gate_up = bank.gate_up_proj + bank.scaling * bank.gate_up_lora_B[0] @ bank.gate_up_lora_A[0]  # [2I, H]
        down = bank.down_proj + bank.scaling * bank.down_lora_B[0] @ bank.down_lora_A[0]  # [H, I]
        weights = adapter.read(getattr(layers[layer], adapter.ffn_attribute), llm.config, layer)  # views
        gate, up = gate_up.chunk(2, dim=0)
        weights.gate.copy_(gate), weights.up.copy_(up), weights.down.copy_(down)
    return llm


def assemble_uni_moe(bases: Bases, settings: dict, stage1, experts: dict, seed: int = 0):
    """Stage 3's starting point: the MoE whose experts' frozen FFNs are the merged stage-2 sources, with the
    stage-1 connectors; expert LoRA B = 0, so each expert starts as its source."""
    model = build_stage_model(bases, settings, "stage3", seed)
    sources = {"base": bases.language_model}
    for name, expert in experts.items():
        sources[name] = merged_source(bases, expert)
    model.load_expert_sources(sources)
    copy_connectors(stage1, model)
    return model


@torch.no_grad()
def round_to_bf16_(model, names: Sequence[str]) -> None:
    """Round the trained tensors to what the bf16 parts file stores, so the saved file rebuilds this very model."""
    wanted = set(names)
    for name, param in model.named_parameters():
        if name in wanted:
            param.copy_(param.to(torch.bfloat16).to(param.dtype))


# -- the resumable loop ---------------------------------------------------------------------------
def draw_schedule(pool: Sequence[int], steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Every step's rows, drawn from the seed up front: a resumed run takes exactly the batches an
    uninterrupted one takes (each batch without repeats; the pool is reshuffled when exhausted)."""
    if not pool:
        raise ValueError("a stage has no training examples")
    rng, order, schedule = random.Random(seed), [], []
    for _ in range(steps):
        rows = []
        while len(rows) < min(batch_size, len(pool)):
            if not order:
                order = list(pool)
                rng.shuffle(order)
            row = order.pop()
            if row not in rows:
                rows.append(row)
        schedule.append(rows)
    return schedule


def train_stage(model, names: Sequence[str], schedule: list[list[int]], loss_of: Callable, lr: float, settings: dict,
                directory: Path, resume: bool, label: str) -> dict:
    """AdamW on `names` only (everything else frozen), one step per schedule entry; linear warm-up then cosine.
    Checkpoints (pipelines.checkpoints: one atomic file each) every `save_every` steps; `resume` continues from
    the newest. -> {"loss", "seconds", ...}"""
    names = list(names)
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    steps, warmup = len(schedule), settings["warmup_steps"]
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    accelerator = cpu_accelerator(mixed_precision=mixed_precision())
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoints = Checkpoints(directory, {"names": names, "schedule": schedule, "lr": lr})
    if not resume:
        checkpoints.clear()
    trainable = {n: params[n] for n in names}
    step, extra = checkpoints.resume(trainable, optimizer, scheduler, required=False)  # run_recipe checks --resume
    losses, seconds = list(extra.get("losses", [])), extra.get("seconds", 0.0)
    model.train()
    bar = tqdm(total=steps, initial=step, desc=label, unit="step")
    while step < steps:
        started = time.perf_counter()
        with accelerator.autocast():
            loss = loss_of(model, schedule[step])
        accelerator.backward(loss)
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
        step += 1
        seconds += time.perf_counter() - started
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", s_per_step=f"{seconds / step:.2f}")
        if step % settings["save_every"] == 0 or step == steps:
            checkpoints.save(step, trainable, optimizer, scheduler, losses=losses, seconds=seconds)
    bar.close()
    release(accelerator, model).requires_grad_(False).eval()
    tail = losses[-10:]
    return {"steps": steps, "final_loss": round(sum(tail) / max(1, len(tail)), 4), "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, steps), 3), "trainable": sum(params[n].numel() for n in names)}


def run_stage(model, stage: str, schedule, loss_of, lr: float, settings: dict, root: Path, resume: bool) -> dict:
    """A stage, or its saved parts when it finished before (resume): -> the stage's report."""
    directory = root / stage
    parts, names = directory / "parts.safetensors", trainable_names(model, stage)
    if resume and parts.is_file():
        return load_parts(model, parts, required=names, hint="zoo train unimoe --recipe tiny")
    if not resume:
        shutil.rmtree(directory, ignore_errors=True)
    report = train_stage(model, names, schedule, loss_of, lr, settings, directory, resume, stage)
    round_to_bf16_(model, names)
    save_parts(model, parts, names, {"stage": stage, **report})
    return report


def stage1_loss(encoded, pad_id: int):
    def loss_of(model, rows):
        batch = collate([encoded[i] for i in rows], pad_id)
        embeds, modality_ids = embed_cached(model, batch)  # [B, L, D]: the connectors' outputs spliced in
        return model(inputs_embeds=embeds, modality_ids=modality_ids, attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
    return loss_of


def upper_loss(hidden: Hidden):
    def loss_of(model, rows):
        return upper_forward(model, hidden.batch(rows)).loss
    return loss_of


# -- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, hidden: Hidden, batch_size: int = 32, routing: bool = False) -> dict:
    """-> {"correct": [bool per example]} (+ "routing": {group: [E] slot counts over all MoE layers}, groups =
    token modalities "tokens:<text|image|audio|video>" and example modalities)."""
    model.eval()
    correct, counts = [False] * len(hidden), {}
    order = sorted(range(len(hidden)), key=lambda i: len(hidden.labels[i]))
    for start in range(0, len(hidden), batch_size):
        rows = order[start:start + batch_size]
        batch = hidden.batch(rows)
        with autocast():
            logits = upper_forward(model, batch).logits  # [n_supervised, V]
        targets = batch["labels"][:, 1:]
        keep = targets != -100  # [B, L-1]
        wrong = torch.zeros(len(rows)).index_add_(0, keep.nonzero()[:, 0], (logits.argmax(-1) != targets[keep]).float())
        for r, i in enumerate(rows):
            correct[i] = bool(wrong[r] == 0)
        if routing:
            _count_routes(model, batch, [hidden.modalities[i] for i in rows], counts)
    return {"correct": correct, **({"routing": counts} if routing else {})}


def _count_routes(model, batch: dict, modalities: list[str], counts: dict) -> None:
    """Add the batch's routed slots per expert, over every MoE layer, by token modality and by example modality."""
    real = batch["attention_mask"].reshape(-1).bool()  # [B * L]
    token_modality = batch["modality_ids"].reshape(-1)
    width = batch["attention_mask"].shape[1]
    groups = {f"tokens:{name}": real & (token_modality == i) for name, i in MODALITY_IDS.items()}
    for m in set(modalities):  # every token of the examples of modality m
        groups[m] = real & torch.tensor([x == m for x in modalities]).repeat_interleave(width)
    for ffn in model.moe_feed_forwards():
        result = ffn.last_routing
        for group, tokens in groups.items():
            if tokens.any():
                chosen = result.indices[tokens][result.mask[tokens]]
                add = torch.bincount(chosen, minlength=result.num_experts)
                counts[group] = add if group not in counts else counts[group] + add


def per_modality(correct: Sequence[bool], modalities: Sequence[str]) -> dict[str, float]:
    """Accuracy per modality (MODALITIES order), then their mean and the worst modality's accuracy."""
    scores = {}
    for modality in data.MODALITIES:
        chosen = [c for c, m in zip(correct, modalities) if m == modality]
        if chosen:
            scores[modality] = round(sum(chosen) / len(chosen), 4)
    values = list(scores.values())
    return {**scores, "mean": round(sum(values) / len(values), 4), "worst": min(values)}


def routing_shares(counts: dict) -> dict:
    """{group: share of its routed slots per expert}, groups in a fixed order."""
    order = [f"tokens:{m}" for m in MODALITY_IDS] + list(data.MODALITIES)
    return {g: [round(float(c) / max(1, int(counts[g].sum())), 4) for c in counts[g]] for g in order if g in counts}


def evaluate_all(models: dict, hidden: Hidden, batch_size: int) -> dict:
    """Every system's per-modality accuracy on `hidden` and Uni-MoE's routing table."""
    report = {"accuracy": {}, "n": {m: hidden.modalities.count(m) for m in data.MODALITIES}}
    for name, model in models.items():
        result = evaluate(model, hidden, batch_size, routing=name == "uni_moe")
        report["accuracy"][name] = per_modality(result["correct"], hidden.modalities)
        if "routing" in result:
            report["routing"] = {"sources": list(SOURCES), "shares": routing_shares(result["routing"])}
    return report


def majority(examples, reference) -> dict:
    """The majority baselines (the answer counted in `reference`, the train split), with their mean and worst."""
    scores = {k: round(v, 4) for k, v in data.majority_baseline(examples, reference).items()}
    return {**scores, "mean": round(sum(scores.values()) / len(scores), 4), "worst": min(scores.values())}


# -- the recipe -----------------------------------------------------------------------------------
def _settings(options: TrainOptions) -> dict:
    settings = {**TINY, **{k: v for k, v in options.extra.items() if k in TINY}}
    check_positive_int("unimoe/tiny", **{k: settings[k] for k in (
        "stage1_steps", "stage2_steps", "stage3_steps", "batch_size", "save_every", "eval_batch_size")})
    if options.max_steps is not None:  # TrainOptions refuses max_steps <= 0
        for key in ("stage1_steps", "stage2_steps", "stage3_steps"):
            settings[key] = options.max_steps
    return settings


def dense_steps(settings: dict) -> int:
    """The dense baseline's budget: the optimizer steps (of the same batch size) of stages 2 and 3 together."""
    return sum(1 for s in SOURCES if EXPERT_DATA[s]) * settings["stage2_steps"] + settings["stage3_steps"]


def build_examples(settings: dict, seed: int, splits: Sequence[str] = data.SPLITS) -> dict[str, list]:
    """The splits of the mixed data (the speech test split holds at most speech_test_limit() examples)."""
    counts = {"train": settings["train_per_modality"], "validation": settings["validation_per_modality"],
              "test": settings["test_per_modality"]}
    out = {}
    for split in splits:
        n = counts[split]
        per_modality_n = {m: n for m in data.MODALITIES}
        if split == "test":
            per_modality_n["speech"] = min(n, data.speech_test_limit())
        out[split] = data.mixed_examples(split, per_modality_n, seed)
    return out


def run_recipe(bases: Bases, examples: dict[str, list], settings: dict, root: Path, resume: bool = False,
               seed: int = 0, models_out: dict | None = None) -> dict:
    """The three stages + the dense baseline + evaluation on `examples` ({"train", "validation", "test"} ->
    Example lists). -> results (also written to root/results.json); every stage's parts under root/<stage>/;
    `models_out` (a dict) receives the trained models by system name."""
    if resume and not any((root / s / "parts.safetensors").is_file() or checkpoint_steps(root / s) for s in STAGES):
        raise FileNotFoundError(f"--resume: nothing to resume in {root} (no stage checkpoint or finished stage); "
                                "run without --resume to start")
    timings, started = {}, time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    pad_id = bases.pad_id

    def lap(name):
        nonlocal started
        timings[name] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()

    stage1 = build_stage_model(bases, settings, "stage1", seed)
    encoded = {split: cached_encode(items, bases, stage1, root / f"towers-{split}.pt", f"towers ({split})")
               for split, items in examples.items()}
    lap("towers")
    train = encoded["train"]
    batch, reports = settings["batch_size"], {}

    def schedule(pool, steps, offset):
        return draw_schedule(pool, steps, batch, seed * 1000 + offset)

    everything = list(range(len(train)))
    reports["stage1"] = run_stage(stage1, "stage1", schedule(everything, settings["stage1_steps"], 1),
                                  stage1_loss(train, pad_id), settings["lr1"], settings, root, resume)
    lap("stage1")
    first = top_layers(bases, settings)[0]
    hidden = {split: lower_hidden(stage1, items, first, pad_id, settings["eval_batch_size"], f"lower layers ({split})")
              for split, items in encoded.items()}
    lap("lower_layers")

    experts = {}
    for offset, (source, modalities) in enumerate(EXPERT_DATA.items()):
        if not modalities:
            continue
        stage = f"stage2-{source}"
        experts[source] = model = build_stage_model(bases, settings, stage, seed)
        copy_connectors(stage1, model)
        pool = [i for i, e in enumerate(train) if e.modality in modalities]
        reports[stage] = run_stage(model, stage, schedule(pool, settings["stage2_steps"], 10 + offset),
                                   upper_loss(hidden["train"]), settings["lr2"], settings, root, resume)
    lap("stage2")
    uni_moe = assemble_uni_moe(bases, settings, stage1, experts, seed)
    reports["stage3"] = run_stage(uni_moe, "stage3", schedule(everything, settings["stage3_steps"], 3),
                                  upper_loss(hidden["train"]), settings["lr3"], settings, root, resume)
    lap("stage3")
    dense = build_stage_model(bases, settings, "dense", seed)
    copy_connectors(stage1, dense)
    reports["dense"] = run_stage(dense, "dense", schedule(everything, dense_steps(settings), 4),
                                 upper_loss(hidden["train"]), settings["lr_dense"], settings, root, resume)
    lap("dense")

    models = {"uni_moe": uni_moe, "dense": dense, "expert:base": stage1,
              **{f"expert:{name}": model for name, model in experts.items()}}
    if models_out is not None:
        models_out.update(models)
    results = {"settings": settings, "seed": seed, "sources": list(SOURCES), "expert_data": EXPERT_DATA,
               "dense_steps": dense_steps(settings), "stages": reports,
               "train_answers": [[e.modality, e.answer] for e in train]}  # the majority baselines' reference
    for split in ("validation", "test"):
        if split in hidden:
            results[split] = evaluate_all(models, hidden[split], settings["eval_batch_size"])
            results[split]["accuracy"]["majority"] = majority(encoded[split], train)
    lap("evaluation")
    results["seconds"] = {**timings, "total": round(sum(timings.values()), 1)}
    (root / "results.json").write_text(json.dumps(results, indent=2))
    return results


@recipe("unimoe", "tiny")
def train_tiny(options: TrainOptions) -> dict:
    """The recipe behind `zoo train unimoe --recipe tiny` (`--set ship=true` copies the parts into the package)."""
    settings = _settings(options)
    root = Path(options.output_dir or cache_dir() / "runs" / "unimoe-tiny")
    started = time.perf_counter()
    bases = real_bases(settings["image_tokens"], settings["audio_queries"], settings["video_frames"])
    examples = build_examples(settings, options.seed)
    data_seconds = round(time.perf_counter() - started, 1)
    results = run_recipe(bases, examples, settings, root, options.resume, options.seed)
    results["seconds"] = {"data_and_bases": data_seconds, **results["seconds"],
                          "total": round(time.perf_counter() - started, 1)}
    (root / "results.json").write_text(json.dumps(results, indent=2))
    if options.extra.get("ship"):
        ship(root)
    print(format_tables(results))
    return results


# -- the shipped parts ----------------------------------------------------------------------------
def ship(root: Path, folder: Path | None = None) -> Path:
    """Copy every stage's parts and the results into models/unimoe/trained/ (zoo.models.trained_dir)."""
    from zoo.models import trained_dir

    folder = Path(folder or trained_dir("unimoe"))
    for stage in STAGES:
        shutil.copy(root / stage / "parts.safetensors", folder / f"{SHIPPED_PREFIX}{stage}.safetensors")
    shutil.copy(root / "results.json", folder / f"{SHIPPED_PREFIX}results.json")
    return folder


def load_stage_models(bases: Bases, settings: dict, part_of: Callable[[str], Path], seed: int = 0) -> dict:
    """Every model of the recipe rebuilt from its parts files (`part_of(stage)` -> path), assembled the way the
    recipe assembles them: {"uni_moe", "dense", "expert:base" (= stage 1), "expert:<source>"}."""
    def loaded(model, stage):
        load_parts(model, part_of(stage), required=trainable_names(model, stage), hint="zoo train unimoe --recipe tiny")
        return model

    stage1 = loaded(build_stage_model(bases, settings, "stage1", seed), "stage1")
    experts = {}
    for source, modalities in EXPERT_DATA.items():
        if modalities:
            stage = f"stage2-{source}"
            experts[source] = loaded(build_stage_model(bases, settings, stage, seed), stage)
            copy_connectors(stage1, experts[source])
    uni_moe = loaded(assemble_uni_moe(bases, settings, stage1, experts, seed), "stage3")
    dense = loaded(build_stage_model(bases, settings, "dense", seed), "dense")
    copy_connectors(stage1, dense)
    return {"uni_moe": uni_moe.eval(), "dense": dense.eval(), "expert:base": stage1.eval(),
            **{f"expert:{name}": model.eval() for name, model in experts.items()}}


def load_shipped(folder: Path | None = None):
    """-> (Uni-MoE in eval mode, its UniMoeProcessor, the results it shipped with): the trained tiny model as
    an ordinary UniMoeForConditionalGeneration (for the gallery: call it on processor(...) outputs, or generate)."""
    models, bases, results = load_shipped_models(folder)
    return models["uni_moe"], bases.processor, results


def load_shipped_models(folder: Path | None = None):
    """-> ({system: model} as load_stage_models, the Bases, the shipped results)."""
    from zoo.models import trained_dir

    folder = Path(folder or trained_dir("unimoe"))
    results_file = folder / f"{SHIPPED_PREFIX}results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} not found: train and ship it with "
                                "`zoo train unimoe --recipe tiny --set ship=true`")
    results = json.loads(results_file.read_text())
    settings = {**TINY, **results["settings"]}
    bases = real_bases(settings["image_tokens"], settings["audio_queries"], settings["video_frames"])
    models = load_stage_models(bases, settings, lambda stage: folder / f"{SHIPPED_PREFIX}{stage}.safetensors",
                               results.get("seed", 0))
    return models, bases, results


@evaluation("unimoe")
def evaluate_shipped(weights: str | None = None) -> dict:
    """`zoo eval unimoe`: the shipped parts (or a run folder's `tiny-*` files given as --weights) on the test split."""
    from types import SimpleNamespace

    models, bases, shipped = load_shipped_models(Path(weights) if weights else None)
    settings = {**TINY, **shipped["settings"]}
    test = build_examples(settings, shipped.get("seed", 0), splits=("test",))["test"]
    encoded = cached_encode(test, bases, models["expert:base"], cache_dir() / "runs" / "unimoe-eval" / "towers-test.pt",
                            "towers (test)")
    first = top_layers(bases, settings)[0]
    hidden = lower_hidden(models["expert:base"], encoded, first, bases.pad_id, settings["eval_batch_size"])
    report = evaluate_all(models, hidden, settings["eval_batch_size"])
    train_answers = [SimpleNamespace(modality=m, answer=a) for m, a in shipped["train_answers"]]
    report["accuracy"]["majority"] = majority(encoded, train_answers)
    return {"test": report, "shipped": {"seconds": shipped.get("seconds"), "stages": shipped.get("stages")}}


# -- tables for the README and the model card ----------------------------------------------------
def format_tables(results: dict, split: str = "test") -> str:
    """Markdown: accuracy per modality for every system, then Uni-MoE's routing table next to the sources."""
    report = results[split]
    columns = [*data.MODALITIES, "mean", "worst"]
    lines = [f"{split} accuracy (exact match; n per modality: "
             + ", ".join(f"{m} {report['n'][m]}" for m in data.MODALITIES) + ")", "",
             "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in report["accuracy"].items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" if c in scores else "-" for c in columns) + " |")
    if "routing" in report:
        sources = report["routing"]["sources"]
        lines += ["", "routing: share of routed slots per expert, all MoE layers (expert = its stage-2 source, "
                  "trained on: " + "; ".join(f"{s}: {', '.join(EXPERT_DATA[s]) or 'nothing (the LLM FFN)'}"
                                             for s in sources) + ")", "",
                  "| tokens of | " + " | ".join(sources) + " |", "|---" * (len(sources) + 1) + "|"]
        for group, shares in report["routing"]["shares"].items():
            lines.append(f"| {group} | " + " | ".join(f"{s:.3f}" for s in shares) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the tables of a Uni-MoE tiny run (default: the shipped one).")
    parser.add_argument("results", nargs="?", help="a results.json (default: models/unimoe/trained/tiny-results.json)")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    args = parser.parse_args()
    if args.results is None:
        from zoo.models import trained_dir

        args.results = trained_dir("unimoe") / f"{SHIPPED_PREFIX}results.json"
    print(format_tables(json.loads(Path(args.results).read_text()), args.split))
