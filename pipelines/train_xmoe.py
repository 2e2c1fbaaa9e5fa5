"""`zoo train xmoe --recipe scratch|dense-to-sparse`: XMoE the way its paper ran it, at a size this CPU trains.

XMoE (arXiv 2403.18926) trains many small experts from scratch with a threshold router (take experts by
descending probability until their mass reaches t; raw probabilities as weights; capacity drops by rank
priority; balance loss 0.01) and claims > 50% fewer MoE-layer FLOPs than top-k at equal quality.

`scratch` trains one *arm* (`--set arm=NAME`, the table `ARMS`) of a small Llama decoder (H = 256, 4 layers,
4 heads, every FFN an MoE block) on WordNet's glosses (pipelines.wordnet: train / validation / test by gloss),
with a byte-level BPE of 4096 tokens trained on the train glosses only and shared by every arm. Every MoE
arm has the same expert parameters, 4 x the dense FFN's 4H = 1024 hidden units (4096 units per layer):

    dense          the dense FFN, 1024 units: the compute every other arm is measured against (100%)
    top2-of-8      8 experts of 512 units, top-2                      100% of the dense FFN's FLOPs
    top16-of-64    64 experts of 64 units (XMoE's small experts), top-16   100%
    top8-of-64     the same small experts, top-8                      50%
    xmoe-t0.9/0.75/0.5   the small experts with the threshold router at t; capacity factor 16, which caps
                   a layer at top-16's compute the way the paper's factor 8 caps its 64 experts of 1/8 size
                   at the dense FFN's (min capacity 4, as in the paper)

All arms start from the same seeded dense init: the MoE arms' experts are the hidden units of one random
dense FFN of 4096 units cut into experts (`experts="split"`, each scaled by E so that a uniform router gives
every chosen expert weight 1), with raw probabilities as weights for top-k too (no renormalisation, as for
XMoE, OLMoE and Qwen3-MoE), so the arms differ only in their routing. The same seed gives the same init and
the same batches in every arm. Optimiser as in the paper's LM script, scaled to this size: AdamW (beta2 0.95,
weight decay 0.1), linear warmup 10% then cosine decay, clip 1.0; lr 2e-3 (the paper's 4.5e-4 is for d = 768),
bf16 autocast where the CPU has it. Not tuned: the validation split is reported next to the test split.

`dense-to-sparse` takes a trained `dense` arm (`--set dense_run=DIR`, default: the scratch run of the same
seed in the cache), splits each of its FFNs into 16 experts of 64 units with the zoo's upcycler (zero router:
at t = 1 it is the dense model exactly) and trains experts and routers with the threshold router at
`--set threshold=t`; `--set threshold=1.0` with `--set sparse=false` is the baseline of training the dense
model the same extra steps.

Each run writes `results.json` (validation and test loss / perplexity, measured experts per token and
expert FLOPs per token relative to the dense FFN, dropped slots, wall time) and `model/` (save_pretrained +
the tokenizer: `AutoModelForCausalLM.from_pretrained` loads it) under --output-dir, checkpoints every
`checkpoint_every` steps (`--resume` continues bit-identically). The figures come from the bf16-rounded
weights that `model/` holds. `python -m zoo.pipelines.xmoe_study` runs every arm for two seeds and writes
the table and the plot.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.core.presets import Presets
from zoo.core.validation import check_non_negative, check_number, check_positive_int
from zoo.integrations.assets import cache_dir
from zoo.upcycling.plan import UpcyclePlan

from .checkpoints import Checkpoints
from .train import TrainOptions, cpu_accelerator, lr_lambda, recipe, release
from .trained_parts import round_as_shipped_
from .wordnet import gloss_splits, packed_sequences


# -- the arms ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScratchArm:
    """One arm of the study: its MoE plan (None: the dense model) and how wide the dense FFN it is cut
    from is, in dense-FFN widths (4: the MoE arms' 4 x 4H units; 1: the dense arm)."""

    description: str
    plan: UpcyclePlan | None
    width: int = 4


SPLIT = UpcyclePlan(experts="split", normalize=False, router_aux_loss_coef=0.01)  # every MoE arm's common part
SMALL = SPLIT.replace(num_experts=64)  # XMoE's small experts: 1/8 of a top2-of-8 expert


def _threshold_arm(t: float) -> ScratchArm:
    return ScratchArm(f"XMoE: 64 small experts, threshold router t = {t}, capacity factor 16",
                      SMALL.replace(router="threshold", threshold=t, capacity_factor=16.0))


ARMS: Presets[ScratchArm] = Presets("XMoE scratch arm", {
    "dense": ScratchArm("dense FFN (4H units): the reference compute", None, width=1),
    "top2-of-8": ScratchArm("8 experts of 512 units, top-2", SPLIT.replace(num_experts=8, num_experts_per_tok=2)),
    "top16-of-64": ScratchArm("64 small experts, top-16 (equal FLOPs to top2-of-8)", SMALL.replace(num_experts_per_tok=16)),
    "top8-of-64": ScratchArm("64 small experts, top-8 (half the FLOPs)", SMALL.replace(num_experts_per_tok=8)),
    "xmoe-t0.9": _threshold_arm(0.9),
    "xmoe-t0.75": _threshold_arm(0.75),
    "xmoe-t0.5": _threshold_arm(0.5),
})

SCRATCH_DEFAULTS = {"arm": "xmoe-t0.9", "hidden": 256, "layers": 4, "heads": 4, "vocab": 4096, "seq_len": 128,
                    "batch": 16, "steps": 400, "lr": 2e-3, "warmup_fraction": 0.1, "weight_decay": 0.1, "clip": 1.0,
                    "checkpoint_every": 100, "pause_after": None, "eval_batch": 32, "eval_rows": None, "ship": False}
DENSE_TO_SPARSE_DEFAULTS = {**SCRATCH_DEFAULTS, "arm": "dense-to-sparse", "dense_run": None, "experts": 16,
                            "threshold": 0.9, "sparse": True, "steps": 150, "lr": 5e-4}
SHIPPED_ARM = "xmoe-t0.9"


def shipped_dir() -> Path:
    from zoo.models import trained_dir

    return trained_dir("xmoe") / "scratch"


def default_run_dir(name: str, seed: int) -> Path:
    return cache_dir() / "xmoe-scratch" / f"{name}-seed{seed}"


def check_settings(settings: dict, defaults: dict, owner: str) -> None:
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"{owner}: unknown settings {unknown}; known: {sorted(defaults)}")
    check_positive_int(owner, hidden=settings["hidden"], layers=settings["layers"], heads=settings["heads"],
                       vocab=settings["vocab"], seq_len=settings["seq_len"], batch=settings["batch"],
                       steps=settings["steps"], checkpoint_every=settings["checkpoint_every"],
                       eval_batch=settings["eval_batch"])
    check_positive_int(owner, allow_none=True, pause_after=settings["pause_after"], eval_rows=settings["eval_rows"])
    check_number(owner, "lr", settings["lr"], low=0, low_open=True)
    check_number(owner, "warmup_fraction", settings["warmup_fraction"], low=0, high=1)
    check_non_negative(owner, weight_decay=settings["weight_decay"], clip=settings["clip"])
    if settings["hidden"] % settings["heads"]:
        raise ValueError(f"{owner}: hidden ({settings['hidden']}) must be a multiple of heads ({settings['heads']})")
    if "experts" in settings:
        check_positive_int(owner, experts=settings["experts"])
    if "arm" in defaults and defaults is SCRATCH_DEFAULTS and settings["arm"] not in ARMS:
        raise ValueError(f"{owner}: unknown arm {settings['arm']!r}; known: {sorted(ARMS)}")
    if "experts" in settings and (4 * settings["hidden"]) % settings["experts"]:
        raise ValueError(f"{owner}: experts ({settings['experts']}) must divide the dense FFN's {4 * settings['hidden']} units")


def merged_settings(defaults: dict, options: TrainOptions, owner: str) -> dict:
    settings = {**defaults, **options.extra}
    if options.max_steps is not None:
        settings["steps"] = options.max_steps
    check_settings(settings, defaults, owner)
    return settings


# -- tokenizer and data -----------------------------------------------------------------------------
def gloss_tokenizer(vocab_size: int):
    """A byte-level BPE of `vocab_size` tokens trained on the train glosses, built once into the cache (every
    arm must read the same tokens for their perplexities to compare) -> (tokenizer, sha256 of its file)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = cache_dir() / "xmoe-scratch" / f"tokenizer-{vocab_size}"
    path = folder / "tokenizer.json"
    if not path.is_file():
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tokenizer.train_from_iterator(gloss_splits()["train"], trainer=trainer)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
            handle.write(tokenizer.to_str())
        os.replace(handle.name, path)  # two runs building it at once both write the same whole file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", model_max_length=1 << 30)
    return tokenizer, digest


def corpus_rows(tokenizer, seq_len: int) -> dict[str, torch.Tensor]:
    """{split: [N, seq_len] token ids} for train / validation / test."""
    return {name: packed_sequences(tokenizer, texts, seq_len) for name, texts in gloss_splits().items()}


def batch_rows(step: int, seed: int, batch: int, num_rows: int) -> torch.Tensor:
    """The row indices of `step`'s batch: one seeded permutation walked in order (wrapping), so every arm of
    one seed sees the same batches in the same order."""
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    return order[(step * batch + torch.arange(batch)) % num_rows]


# -- models -----------------------------------------------------------------------------------------
def decoder_config(settings: dict, width: int, vocab_size: int, eos_id: int):
    from transformers import LlamaConfig

    hidden = settings["hidden"]
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden * width,
                       num_hidden_layers=settings["layers"], num_attention_heads=settings["heads"],
                       num_key_value_heads=settings["heads"], max_position_embeddings=settings["seq_len"],
                       tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)


def build_arm(arm: ScratchArm, settings: dict, vocab_size: int, eos_id: int, seed: int):
    """The arm's model, from the seeded dense init (see the module docstring)."""
    from transformers import LlamaForCausalLM

    from zoo.models.upcycled import UpcycledMoeForCausalLM
    from zoo.models.xmoe import XMoEForCausalLM

    torch.manual_seed(seed)
    dense = LlamaForCausalLM(decoder_config(settings, arm.width, vocab_size, eos_id))
    if arm.plan is None:
        return dense
    model_class = XMoEForCausalLM if arm.plan.router == "threshold" else UpcycledMoeForCausalLM
    return model_class.from_dense(dense, arm.plan.replace(seed=seed))


def moe_layers(model) -> list:
    return model.moe_layers() if hasattr(model, "moe_layers") else []


def expert_units(model) -> int | None:
    """Hidden units of one expert (None for a dense model)."""
    layers = moe_layers(model)
    if not layers:
        return None
    plan = model.config.upcycle_plan
    return model.config.text_config.intermediate_size // plan.num_experts


# -- evaluation -------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_lm(model, rows: torch.Tensor, batch: int, dense_units: int) -> dict:
    """Mean next-token loss (fp32) and perplexity over `rows`; for an MoE model also the experts each token
    used (after capacity), the dropped share and the expert FLOPs per token relative to the dense FFN of
    `dense_units` units (the router's H x E is left out: 64 x 256 multiply-adds, 1.6% of a 64-unit GLU expert)."""
    from torch.nn import functional as F

    was_training = model.training
    model.eval()
    total_loss, tokens, expert_slots, dropped_slots = 0.0, 0, 0.0, 0.0
    units = expert_units(model)
    for start in range(0, len(rows), batch):
        ids = rows[start:start + batch]
        logits = model(input_ids=ids).logits[:, :-1].float()  # [B, S-1, V]
        targets = ids[:, 1:]
        total_loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
        tokens += targets.numel()
        for _, ffn in moe_layers(model):
            routing = ffn.last_routing
            expert_slots += routing.expert_counts().sum().item()
            dropped_slots += routing.num_dropped
    model.train(was_training)
    loss = total_loss / tokens
    result = {"loss": round(loss, 5), "perplexity": round(float(torch.tensor(loss).exp()), 3), "tokens": tokens}
    if units is None:
        return result | {"experts_per_token": None, "expert_flops": 1.0, "dropped_fraction": 0.0}
    layer_tokens = len(moe_layers(model)) * rows.numel()  # every position passes every MoE layer
    per_token = expert_slots / layer_tokens
    return result | {"experts_per_token": round(per_token, 3), "expert_flops": round(per_token * units / dense_units, 4),
                     "dropped_fraction": round(dropped_slots / max(expert_slots + dropped_slots, 1), 4)}


@torch.no_grad()
def router_sharpness(model, rows: torch.Tensor, batch: int = 32) -> dict | None:
    """How peaked the routers are on `rows`: the mean top-1 probability and the mean number of experts needed to
    reach 50% / 90% of the probability mass (a uniform 64-way router: 1/64, 32, 58). None for a dense model."""
    layers = moe_layers(model)
    if not layers:
        return None
    top1, need50, need90, count = 0.0, 0.0, 0.0, 0
    model.eval()
    for start in range(0, len(rows), batch):
        model(input_ids=rows[start:start + batch])
        for _, ffn in layers:
            probs = torch.softmax(ffn.last_routing.logits.float(), dim=-1)  # [T, E]
            ranked = probs.sort(dim=-1, descending=True).values.cumsum(dim=-1)
            top1 += probs.max(dim=-1).values.sum().item()
            need50 += ((ranked < 0.5).sum(dim=-1) + 1).sum().item()
            need90 += ((ranked < 0.9).sum(dim=-1) + 1).sum().item()
            count += probs.shape[0]
    return {"top1_probability": round(top1 / count, 4), "experts_for_50%": round(need50 / count, 2),
            "experts_for_90%": round(need90 / count, 2), "num_experts": layers[0][1].moe.router.num_experts}


# -- training ---------------------------------------------------------------------------------------
def train_lm(model, rows: torch.Tensor, settings: dict, options: TrainOptions, output_dir: Path, desc: str,
             fingerprint: dict) -> tuple[float, bool, list[float]]:
    """Train `model` in place on `rows` to settings['steps'] (or 'pause_after'), checkpointing; -> (seconds,
    reached the last step, the LM loss every 10 steps)."""
    from zoo.core.precision import mixed_precision

    accelerator = cpu_accelerator(mixed_precision())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "router" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "router" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings["lr"], betas=(0.9, 0.95))
    steps = settings["steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, round(settings["warmup_fraction"] * steps)), steps))
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    checkpoints = Checkpoints(output_dir / "checkpoints", fingerprint)
    if not options.resume:
        checkpoints.clear()
    start, extra = checkpoints.resume(prepared, optimizer, scheduler, required=options.resume)
    curve = list(extra.get("curve", []))
    seconds = float(extra.get("seconds", 0.0))
    stop = steps if settings["pause_after"] is None else min(steps, settings["pause_after"])
    prepared.train()
    began = time.perf_counter()
    bar = tqdm(range(start, stop), initial=start, total=steps, desc=desc, mininterval=5.0)
    for step in bar:
        ids = rows[batch_rows(step, options.seed, settings["batch"], len(rows))]
        out = prepared(input_ids=ids, labels=ids)
        accelerator.backward(out.loss)
        if settings["clip"] > 0:
            accelerator.clip_grad_norm_(prepared.parameters(), settings["clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % 10 == 0:
            aux = getattr(out, "aux_loss", None)
            lm = out.loss.item() - (model.config.router_aux_loss_coef * aux.item() if aux is not None else 0.0)
            curve.append(round(lm, 4))
            bar.set_postfix(loss=f"{lm:.3f}", refresh=False)
        if done % settings["checkpoint_every"] == 0 or done == stop:
            elapsed = seconds + time.perf_counter() - began
            checkpoints.save(done, prepared.state_dict(), optimizer, scheduler, curve=curve, seconds=elapsed)
    seconds += time.perf_counter() - began
    release(accelerator, prepared)
    return seconds, stop == steps, curve


def finish_run(model, tokenizer, tokenizer_sha: str, rows: dict, settings: dict, options: TrainOptions,
               output_dir: Path, seconds: float, curve: list[float], record: dict) -> dict:
    """Round, evaluate on validation and test, save model/ + results.json; -> the results."""
    with torch.no_grad():  # every parameter as model/ holds it: the figures are the bf16 folder's
        round_as_shipped_(model, [name for name, _ in model.named_parameters()])
    model.eval()
    dense_units = 4 * settings["hidden"]
    limit = settings["eval_rows"]  # None: every row; a number is for smoke runs and is recorded in the results
    result = {**record, "seed": options.seed, "steps": settings["steps"],
              "train_tokens": settings["steps"] * settings["batch"] * settings["seq_len"],
              "train_seconds": round(seconds, 1), "parameters": sum(p.numel() for p in model.parameters()),
              "tokenizer_sha256": tokenizer_sha,
              "validation": evaluate_lm(model, rows["validation"][:limit], settings["eval_batch"], dense_units),
              "test": evaluate_lm(model, rows["test"][:limit], settings["eval_batch"], dense_units),
              "train_curve_every_10_steps": curve,
              "settings": {k: v for k, v in settings.items() if k != "pause_after"}}
    folder = output_dir / "model"
    model.to(torch.bfloat16).save_pretrained(folder)
    model.float()
    tokenizer.save_pretrained(folder)
    (output_dir / "results.json").write_text(json.dumps(result, indent=1))
    return result


def ship(output_dir: Path, result: dict) -> Path:
    """Copy the run's model/ folder and results to models/xmoe/trained/scratch/ (what the tests check)."""
    target = shipped_dir()
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(output_dir / "model", target)
    (target / "results.json").write_text(json.dumps(result, indent=1))
    return target


def paused(settings: dict, output_dir: Path) -> dict:
    return {"paused_after": settings["pause_after"], "output_dir": str(output_dir),
            "resume": "run the same command with --resume"}


@recipe("xmoe", "scratch")
def train_scratch(options: TrainOptions) -> dict:
    settings = merged_settings(SCRATCH_DEFAULTS, options, "xmoe/scratch")
    arm = ARMS[settings["arm"]]
    output_dir = options.output_dir or default_run_dir(settings["arm"], options.seed)
    tokenizer, sha = gloss_tokenizer(settings["vocab"])
    rows = corpus_rows(tokenizer, settings["seq_len"])
    model = build_arm(arm, settings, len(tokenizer), tokenizer.eos_token_id, options.seed)
    fingerprint = {"recipe": "scratch", "seed": options.seed, "tokenizer": sha,
                   **{k: v for k, v in settings.items() if k not in ("pause_after", "ship")}}
    seconds, finished, curve = train_lm(model, rows["train"], settings, options, output_dir,
                                        f"xmoe/scratch {settings['arm']} seed {options.seed}", fingerprint)
    if not finished:
        return paused(settings, output_dir)
    record = {"arm": settings["arm"], "description": arm.description,
              "plan": arm.plan.to_dict() if arm.plan is not None else None}
    result = finish_run(model, tokenizer, sha, rows, settings, options, output_dir, seconds, curve, record)
    if settings["ship"]:
        result["shipped_to"] = str(ship(output_dir, result))
    return result


def dense_to_sparse_plan(settings: dict) -> UpcyclePlan:
    """The trained dense FFN cut into `experts` experts with a zero router (uniform: at t = 1 the model is
    the dense one exactly), trained with the threshold router at `threshold`; dropless."""
    return UpcyclePlan(num_experts=settings["experts"], router="threshold", threshold=settings["threshold"],
                       experts="split", router_init="zeros", router_aux_loss_coef=0.01)


@recipe("xmoe", "dense-to-sparse")
def train_dense_to_sparse(options: TrainOptions) -> dict:
    from transformers import AutoModelForCausalLM

    from zoo.models.xmoe import XMoEForCausalLM

    settings = merged_settings(DENSE_TO_SPARSE_DEFAULTS, options, "xmoe/dense-to-sparse")
    source = Path(settings["dense_run"]) if settings["dense_run"] else default_run_dir("dense", options.seed)
    results_file = source / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"xmoe/dense-to-sparse: no trained dense arm in {source} (results.json missing); "
                                f"train it with `zoo train xmoe --recipe scratch --set arm=dense --seed {options.seed}` "
                                "or name one with --set dense_run=DIR")
    dense_result = json.loads(results_file.read_text())
    if dense_result.get("arm") != "dense":
        raise ValueError(f"xmoe/dense-to-sparse: {source} holds arm {dense_result.get('arm')!r}, not the dense arm")
    for key in ("hidden", "layers", "heads", "vocab", "seq_len"):
        settings[key] = dense_result["settings"][key]  # the architecture is the dense run's
    tokenizer, sha = gloss_tokenizer(settings["vocab"])
    if sha != dense_result["tokenizer_sha256"]:
        raise ValueError(f"xmoe/dense-to-sparse: the dense run in {source} used another tokenizer than "
                         f"{cache_dir() / 'xmoe-scratch'}; retrain it or remove the cached tokenizer")
    rows = corpus_rows(tokenizer, settings["seq_len"])
    dense = AutoModelForCausalLM.from_pretrained(source / "model", dtype=torch.float32)
    plan = dense_to_sparse_plan(settings) if settings["sparse"] else None
    model = XMoEForCausalLM.from_dense(dense, plan) if plan is not None else dense
    name = f"dense-to-sparse t={settings['threshold']}" if plan is not None else "dense, trained on"
    output_dir = options.output_dir or default_run_dir(
        f"dense-to-sparse-t{settings['threshold']}" if plan is not None else "dense-continued", options.seed)
    fingerprint = {"recipe": "dense-to-sparse", "seed": options.seed, "tokenizer": sha, "source": str(source),
                   **{k: v for k, v in settings.items() if k not in ("pause_after", "ship")}}
    seconds, finished, curve = train_lm(model, rows["train"], settings, options, output_dir,
                                        f"xmoe/{name} seed {options.seed}", fingerprint)
    if not finished:
        return paused(settings, output_dir)
    record = {"arm": "dense-to-sparse" if plan is not None else "dense-continued", "description": name,
              "plan": plan.to_dict() if plan is not None else None, "source": str(source),
              "source_steps": dense_result["steps"]}
    return finish_run(model, tokenizer, sha, rows, settings, options, output_dir, seconds, curve, record)


__all__ = ["ARMS", "DENSE_TO_SPARSE_DEFAULTS", "SCRATCH_DEFAULTS", "ScratchArm", "build_arm", "evaluate_lm",
           "gloss_tokenizer", "train_dense_to_sparse", "train_scratch"]
