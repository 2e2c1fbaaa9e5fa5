"""`zoo train mova --recipe tiny`: MoVA on easy-VQA with what ships here, and the paper's ablation.

    model     models.mova preset "tiny-packaged" around the packaged SmolLM2-135M-Instruct (frozen): base encoder
              MobileNetV2 stage 3 (timm); experts EfficientNet-Lite0 late map (timm), MobileNetV2 stage 1 (a
              low-level map that keeps colour), facenet's MTCNN P-Net (facenet-pytorch); gate text = the packaged
              MiniLM (all frozen). Trained: MoV-Adapter + downsampler + projector, then the routing LoRA.
    data      easy-VQA train, minus `validation_images` held-out images (the validation split: easy-VQA has none);
              easy-VQA test, a fixed `eval_questions` subset (seed 0) for the report.
    stage 1   adapter + downsampler + projector (+ with `--set answer_lora_rank=8` an answer-pass LoRA on q/v, on
              only outside the routing pass: the paper fine-tunes the LLM here) on the answer loss, each training
              sample with a fixed random expert
              mask (every expert allowed with probability `expert_rate`), so that one adapter learns to use any
              subset of the pool, the empty one included
    labels    the paper's routing labels (§3.4): expert j is useful for sample i when the answer loss with j alone is
              lower than with the base encoder alone, at most 3 (models.mova.routing_labels). Simplified: the losses
              come from the one stage-1 adapter with the mask set to {j} or {} (the paper trains one LLaVA per
              encoder), on `label_samples` training samples (and the validation ones, to score pass 1)
    stage 2   the routing LoRA (on only in the routing pass) on the routing prompt -> the labels' letters ("A, B" or
              "none"), `routing_steps` steps
    report    easy-VQA test accuracy per question type for: base encoder only; all experts always on; random routing
              (each expert on with probability `expert_rate`, as in stage 1); MoVA coarse (pass 1's answer) + fine
              (the gate) routing. Plus how often pass 1 picks each expert per question type, pass 1's agreement
              with the validation labels, and the routing pass's cost in seconds per question.

The LLM's own weights stay frozen; it adapts through the pass LoRAs only (models.mova.routing_lora). The shipped
parts have no answer LoRA: a run with one (rank 8) left colour questions at chance as well, was on par overall
(.724 vs .710) and made pass 1 pick every expert for every question (README).

Answers are scored as in pipelines.vl_easyvqa: teacher-forced greedy exact match (the answer pass); pass 1 is
real greedy generation. Checkpoints (pipelines.checkpoints, through pipelines.train_vl.run_stage) every
`save_every` steps; `--resume` continues from the newest; finished stages and the labels are kept as files
under the run folder and reused. `--set ship=true` copies the trained parts and the report into
models/mova/trained/.
"""
from __future__ import annotations

import io
import json
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationMixin

from zoo.core.precision import autocast
from zoo.core.validation import check_number, check_positive_int
from zoo.integrations.assets import cache_dir
from zoo.multimodal.processing import IMAGE_TOKEN

from . import trained_parts
from . import vl_easyvqa as vqa
from .checkpoints import checkpoint_steps, write_atomically
from .train import TrainOptions, evaluation, recipe
from .train_vl import run_stage

TINY = {"adapter_steps": 150, "batch_size": 32, "lr_adapter": 2e-3, "expert_rate": 0.5, "label_samples": 384,
        "routing_steps": 40, "routing_batch_size": 16, "lr_routing": 2e-3, "routing_lora_rank": 8,
        "answer_lora_rank": None, "validation_images": 100, "validation_questions": 96, "eval_questions": 500, "eval_batch_size": 32,
        "save_every": 20}
COUNTS = ("adapter_steps", "batch_size", "label_samples", "routing_steps", "routing_batch_size", "routing_lora_rank",
          "validation_images", "validation_questions", "eval_questions", "eval_batch_size", "save_every")
CONDITIONS = ("base only", "all experts", "random routing", "MoVA coarse+fine")
QUESTION_TYPES = ("yes/no", "shape", "colour")
STAGE_DIRS = ("stage1-adapter", "stage2-routing-lora")  # checkpoints of each stage, under the run folder
LABEL_FILES = ("routing-labels-train.pt", "routing-labels-validation.pt")
PARTS_FILE = "easyvqa-tiny.safetensors"  # in models/mova/trained/ (zoo.models.trained_dir), with the report beside it
REPORT_FILE = "easyvqa-tiny.report.json"


def settings_of(options: TrainOptions) -> dict:
    unknown = sorted(set(options.extra) - set(TINY) - {"ship"})
    if unknown:
        raise ValueError(f"mova/tiny: unknown --set keys {unknown}; known: {sorted(TINY)} and ship")
    settings = {**TINY, **options.extra}
    settings.pop("ship", None)
    check_positive_int("mova/tiny", **{k: settings[k] for k in COUNTS})
    check_positive_int("mova/tiny", allow_none=True, answer_lora_rank=settings["answer_lora_rank"])
    for name in ("lr_adapter", "lr_routing"):
        check_number("mova/tiny", name, settings[name], low=0, low_open=True)
    check_number("mova/tiny", "expert_rate", settings["expert_rate"], low=0, high=1)
    if options.max_steps is not None:
        settings["adapter_steps"] = settings["routing_steps"] = options.max_steps
    return settings


# -- model -------------------------------------------------------------------------------------------------------
def load_bases():
    """(SmolLM2-135M-Instruct fp32, its tokenizer, the packaged MiniLM's tokenizer)."""
    from transformers import AutoTokenizer

    from zoo.models.mova.question_encoder import minilm_path

    language_model, tokenizer = vqa.load_base()
    return language_model, tokenizer, AutoTokenizer.from_pretrained(minilm_path())


def build_mova(language_model, tokenizer, question_tokenizer, routing_lora_rank: int = TINY["routing_lora_rank"],
               answer_lora_rank: int = TINY["answer_lora_rank"]):
    """-> (model, processor): the tiny-packaged preset around the loaded LLM, packaged tower weights."""
    from zoo.models.mova import MovaForConditionalGeneration, MovaProcessor
    from zoo.models.mova.presets import preset_config

    probe = MovaProcessor(tokenizer, 1, expert_names=["x"], expert_descriptions=["x"])  # adds <image> to the tokenizer
    config = preset_config("tiny-packaged", text_config=language_model.config.to_dict(),
                           image_token_id=probe.image_token_id, routing_lora_rank=routing_lora_rank,
                           answer_lora_rank=answer_lora_rank)
    model = MovaForConditionalGeneration(config, language_model=language_model)
    return model, MovaProcessor.for_model(model, tokenizer, question_tokenizer, chat_template=vqa.CHAT_TEMPLATE)


def adapter_names(model) -> list[str]:
    """Stage 1's parts: the MoV-Adapter, downsampler, projector and the answer-pass LoRA."""
    return [n for n, _ in model.named_parameters()
            if n.startswith(("adapter.", "downsample.", "projector.", "answer_lora."))]


def routing_lora_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("routing_lora.")]


# -- data ----------------------------------------------------------------------------------------------------------
class MovaVqa:
    """Some samples (`rows`) of an EasyVqa split, batched for MoVA: the answer batch of vl_easyvqa plus the gate's
    question tokens and one expert mask per sample (`masks` [len(rows), E] bool, set by the caller)."""

    def __init__(self, data: vqa.EasyVqa, processor, rows, masks: torch.Tensor):
        self.data, self.processor, self.rows = data, processor, list(rows)
        if masks.dtype != torch.bool or masks.shape != (len(self.rows), len(processor.expert_names)):
            raise ValueError(f"MovaVqa: masks must be bool [{len(self.rows)}, {len(processor.expert_names)}], got "
                             f"{masks.dtype} {tuple(masks.shape)}")
        self.masks = masks

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def questions(self) -> list[str]:
        return [self.data.questions[r] for r in self.rows]

    @property
    def answers(self) -> list[str]:
        return [self.data.answers[r] for r in self.rows]

    def with_masks(self, masks: torch.Tensor) -> "MovaVqa":
        return MovaVqa(self.data, self.processor, self.rows, masks)

    def question_tokens(self, indices) -> dict:
        from zoo.models.mova.processing_mova import QUESTION_TEMPLATE

        tokenizer = self.processor.question_tokenizer
        tokenizer.padding_side = "right"
        asked = tokenizer([QUESTION_TEMPLATE.format(question=self.data.questions[self.rows[i]]) for i in indices],
                          return_tensors="pt", padding=True)
        return {"question_input_ids": asked["input_ids"], "question_attention_mask": asked["attention_mask"]}

    def batch(self, indices) -> dict:
        indices = list(indices)
        return {**self.data.batch([self.rows[i] for i in indices]), **self.question_tokens(indices),
                "expert_mask": self.masks[indices]}

    def pixels(self, indices) -> torch.Tensor:
        return self.data.pixels[self.data.image_rows[[self.rows[i] for i in indices]]]


def routing_target(mask_row: torch.Tensor, letters) -> str:
    """A label row -> the routing answer the LoRA learns: "A, C" or "none"."""
    chosen = [letter for letter, on in zip(letters, mask_row.tolist()) if on]
    return ", ".join(chosen) if chosen else "none"


def routing_prompt_ids(processor, question: str) -> list[int]:
    prompt = processor.routing_prompt(question).replace(IMAGE_TOKEN, IMAGE_TOKEN * processor.num_routing_tokens)
    return processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def pad(rows: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (ids [B, W], attention mask [B, W]) padded on the left (generation) or the right (training)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row), 1
    return ids, mask


class RoutingVqa:
    """Routing-pass samples: routing prompt (base tokens only) -> the label's letters, for the routing LoRA."""

    def __init__(self, data: MovaVqa, labels: torch.Tensor):
        self.data = data
        processor = data.processor
        self.prompts = [routing_prompt_ids(processor, q) for q in data.questions]
        targets = [routing_target(row, processor.expert_letters) + vqa.END for row in labels]
        self.targets = processor.tokenizer(targets, add_special_tokens=False)["input_ids"]
        self.pad_id = data.data.pad_id

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices) -> dict:
        indices = list(indices)
        ids, mask = pad([self.prompts[i] + self.targets[i] for i in indices], self.pad_id, left=False)
        labels = torch.full_like(ids, -100)
        for row, i in enumerate(indices):
            start = len(self.prompts[i])
            labels[row, start:start + len(self.targets[i])] = torch.tensor(self.targets[i])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": self.data.pixels(indices),
                "routing_pass": True}


def split_train(data: vqa.EasyVqa, validation_images: int, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, validation rows): the validation split is every question about `validation_images` held-out
    images, so no validation image is seen in training."""
    images = sorted(set(data.image_rows.tolist()))
    if validation_images >= len(images):
        raise ValueError(f"mova/tiny: validation_images ({validation_images}) must be fewer than the {len(images)} "
                         "training images")
    random.Random(seed).shuffle(images)
    held_out = set(images[:validation_images])
    rows = data.image_rows.tolist()
    return [i for i, r in enumerate(rows) if r not in held_out], [i for i, r in enumerate(rows) if r in held_out]


def random_masks(n: int, num_experts: int, rate: float, seed: int) -> torch.Tensor:
    return torch.rand(n, num_experts, generator=torch.Generator().manual_seed(seed)) < rate


# -- routing labels --------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_losses(model, data: MovaVqa, batch_size: int) -> torch.Tensor:
    """[n] mean answer-token loss of every sample with its mask (the per-sample L_ij of the paper)."""
    model.eval()
    losses = []
    for start in range(0, len(data), batch_size):
        batch = data.batch(range(start, min(start + batch_size, len(data))))
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch, labels=labels).logits.float()  # [n_supervised, V]
        keep = labels[:, 1:] != -100
        token_loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep], reduction="none")
        rows = keep.nonzero()[:, 0]
        total = torch.zeros(keep.shape[0]).index_add_(0, rows, token_loss)
        losses.append(total / keep.sum(1).clamp_min(1))
    return torch.cat(losses)


def label_routing(model, data: MovaVqa, batch_size: int) -> dict[str, torch.Tensor]:
    """The paper's routing labels on `data`: losses with the base alone and with each expert alone -> labels."""
    from zoo.models.mova import routing_labels

    n, experts = len(data), model.config.num_experts
    base = sample_losses(model, data.with_masks(torch.zeros(n, experts, dtype=torch.bool)), batch_size)
    alone = []
    for j in range(experts):
        only_j = torch.zeros(n, experts, dtype=torch.bool)
        only_j[:, j] = True
        alone.append(sample_losses(model, data.with_masks(only_j), batch_size))
    expert_losses = torch.stack(alone, dim=1)  # [n, E]
    return {"base_losses": base, "expert_losses": expert_losses, "labels": routing_labels(expert_losses, base)}


def cached_labels(path: Path, model, data: MovaVqa, batch_size: int) -> dict[str, torch.Tensor]:
    """Labels computed once per run folder (written atomically; a resumed run reuses them)."""
    if path.is_file():
        state = torch.load(path, weights_only=True)
        if state["rows"] == data.rows:
            return state
    state = {**label_routing(model, data, batch_size), "rows": data.rows}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue())
    return state


# -- pass 1 and the ablation -------------------------------------------------------------------------------------------
@torch.no_grad()
def coarse_route(model, data: MovaVqa, batch_size: int) -> tuple[torch.Tensor, list[str], float]:
    """Pass 1 on every sample: greedy answers to the routing prompt -> (mask [n, E], answers, seconds per question).
    The same call as MovaForConditionalGeneration.generate's pass 1, without its pass 2 (answers are scored
    teacher-forced)."""
    from zoo.models.mova import routing_mask

    model.eval()
    processor, config = data.processor, model.config
    tokenizer = processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids(vqa.END)
    answers: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(data), batch_size):
        indices = range(start, min(start + batch_size, len(data)))
        ids, mask = pad([routing_prompt_ids(processor, data.questions[i]) for i in indices], data.data.pad_id, left=True)
        with autocast():
            out = GenerationMixin.generate(model, input_ids=ids, attention_mask=mask, pixel_values=data.pixels(indices),
                                           routing_pass=True, max_new_tokens=config.routing_max_new_tokens,
                                           do_sample=False, num_beams=1, eos_token_id=end_id, pad_token_id=data.data.pad_id)
        answers += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    seconds = (time.perf_counter() - started) / max(1, len(data))
    return routing_mask(answers, config.expert_letters, config.expert_names, config.max_routed_experts), answers, seconds


def per_type(correct: torch.Tensor, answers: list[str]) -> dict[str, float]:
    types = [vqa.answer_type(a) for a in answers]
    report = {"all": round(correct.float().mean().item(), 4)}
    for kind in QUESTION_TYPES:
        chosen = torch.tensor([t == kind for t in types])
        report[kind] = round(correct[chosen].float().mean().item(), 4) if chosen.any() else float("nan")
    return report


def picks_per_type(masks: torch.Tensor, answers: list[str], names: list[str]) -> dict[str, dict[str, float]]:
    """How often pass 1 picks each expert (and none) per question type: share of that type's questions."""
    types = [vqa.answer_type(a) for a in answers]
    report = {}
    for kind in QUESTION_TYPES:
        rows = masks[torch.tensor([t == kind for t in types], dtype=torch.bool)]
        if not len(rows):
            continue
        shares = {name: round(rows[:, j].float().mean().item(), 4) for j, name in enumerate(names)}
        report[kind] = {**shares, "none": round((~rows.any(1)).float().mean().item(), 4)}
    return report


def ablation(model, data: MovaVqa, settings: dict, seed: int, progress=None) -> dict:
    """The paper's ablation on `data` (see the module docstring) -> the report dict."""
    n, experts, batch_size = len(data), model.config.num_experts, settings["eval_batch_size"]
    routed, routing_answers, seconds = coarse_route(model, data, batch_size)
    masks = {"base only": torch.zeros(n, experts, dtype=torch.bool), "all experts": torch.ones(n, experts, dtype=torch.bool),
             "random routing": random_masks(n, experts, settings["expert_rate"], seed + 1), "MoVA coarse+fine": routed}
    accuracy = {}
    for condition in CONDITIONS:
        started = time.perf_counter()
        correct = vqa.correct_answers(model, data.with_masks(masks[condition]), batch_size, progress)
        accuracy[condition] = {**per_type(correct, data.answers),
                               "answer_seconds_per_question": round((time.perf_counter() - started) / max(1, n), 4)}
    return {"questions": n, "accuracy": accuracy,
            "pass1_picks": picks_per_type(routed, data.answers, model.config.expert_names),
            "routing_seconds_per_question": round(seconds, 4), "routing_answer_examples": routing_answers[:5]}


def label_agreement(routed: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"exact": round((routed == labels).all(1).float().mean().item(), 4),
            "per_expert": round((routed == labels).float().mean().item(), 4)}


def label_summary(labels: torch.Tensor, names: list[str]) -> dict[str, float]:
    return {**{name: round(labels[:, j].float().mean().item(), 4) for j, name in enumerate(names)},
            "none": round((~labels.any(1)).float().mean().item(), 4)}


@torch.no_grad()
def start_afresh_or_check_resumable(root: Path, resume: bool) -> None:
    """Without --resume, nothing of an earlier run in `root` is reused (its finished stage and labels go; run_stage
    clears the checkpoints). With it, some of the run must be there; each stage then continues from its newest
    checkpoint, or starts when the run was killed before it saved one."""
    finished = [root / "adapter.safetensors", *(root / name for name in LABEL_FILES)]
    if not resume:
        for path in finished:
            path.unlink(missing_ok=True)
        return
    if not any(p.is_file() for p in finished) and not any(checkpoint_steps(root / d) for d in STAGE_DIRS):
        raise FileNotFoundError(f"--resume: no checkpoint in {root} (nothing to resume; run without --resume to start)")


# -- the recipe --------------------------------------------------------------------------------------------------------
def train(model, processor, train_data: vqa.EasyVqa, test_data: vqa.EasyVqa, settings: dict, root: Path,
          resume: bool, seed: int) -> dict:
    """Stages 1-2, labels and the report on already loaded data (the recipe and the tests call this)."""
    experts = model.config.num_experts
    training_rows, validation_rows = split_train(train_data, settings["validation_images"], seed)
    validation_rows = validation_rows[:settings["validation_questions"]]
    training = MovaVqa(train_data, processor, training_rows,
                       random_masks(len(training_rows), experts, settings["expert_rate"], seed))
    adapter_done = root / "adapter.safetensors"
    start_afresh_or_check_resumable(root, resume)
    if not adapter_done.is_file():
        run_stage(model, training, adapter_names(model), settings["adapter_steps"], settings["lr_adapter"],
                  settings["batch_size"], root / STAGE_DIRS[0], resume, seed, "stage 1 (MoV-Adapter)",
                  save_every=settings["save_every"])
        trained_parts.save_parts(model, adapter_done, adapter_names(model))
    # reloaded either way: a run resumed after stage 1 then continues from the same (bf16) adapter as one that was not
    trained_parts.load_parts(model, adapter_done, required=adapter_names(model))

    none = torch.zeros(0, experts, dtype=torch.bool)
    label_rows = random.Random(seed + 2).sample(training_rows, min(settings["label_samples"], len(training_rows)))
    labelled = MovaVqa(train_data, processor, label_rows, none.new_zeros(len(label_rows), experts))
    train_labels = cached_labels(root / LABEL_FILES[0], model, labelled, settings["eval_batch_size"])
    validation = MovaVqa(train_data, processor, validation_rows, none.new_zeros(len(validation_rows), experts))
    validation_labels = cached_labels(root / LABEL_FILES[1], model, validation, settings["eval_batch_size"])

    routing_loss = run_stage(model, RoutingVqa(labelled, train_labels["labels"]), routing_lora_names(model),
                             settings["routing_steps"], settings["lr_routing"], settings["routing_batch_size"],
                             root / STAGE_DIRS[1], resume, seed, "stage 2 (routing LoRA)",
                             save_every=settings["save_every"])
    trained_parts.round_as_shipped_(model, routing_lora_names(model))  # the report is the shipped (bf16) parts' report
    validation_routed, _, _ = coarse_route(model, validation, settings["eval_batch_size"])
    names = model.config.expert_names
    test = MovaVqa(test_data, processor, range(len(test_data)), none.new_zeros(len(test_data), experts))
    report = ablation(model, test, settings, seed, progress=lambda it: tqdm(it, desc="easy-VQA test", unit="batch"))
    return {"settings": settings, "seed": seed, "final_routing_loss": round(routing_loss, 4),
            "routing_labels": {"train": label_summary(train_labels["labels"], names),
                               "validation": label_summary(validation_labels["labels"], names)},
            "validation_pass1_agreement": label_agreement(validation_routed, validation_labels["labels"]),
            "test": report}


@recipe("mova", "tiny")
def tiny(options: TrainOptions) -> dict:
    settings = settings_of(options)
    root = Path(options.output_dir or cache_dir() / "runs" / "mova-easyvqa")
    started = time.time()
    torch.manual_seed(options.seed)
    language_model, tokenizer, question_tokenizer = load_bases()
    model, processor = build_mova(language_model, tokenizer, question_tokenizer, settings["routing_lora_rank"],
                                  settings["answer_lora_rank"])
    train_data = vqa.EasyVqa("train", processor)
    test_data = vqa.EasyVqa("test", processor, limit=settings["eval_questions"])
    print(f"loaded in {time.time() - started:.0f} s")
    result = train(model, processor, train_data, test_data, settings, root, options.resume, options.seed)
    result["minutes"] = round((time.time() - started) / 60, 1)
    parts = root / PARTS_FILE
    trained_parts.save_parts(model, parts, adapter_names(model) + routing_lora_names(model),
                             {"settings": settings, "seed": options.seed})
    (root / REPORT_FILE).write_text(json.dumps(result, indent=2))
    if options.extra.get("ship"):
        shutil.copyfile(parts, shipped_dir() / PARTS_FILE)  # not copy: safetensors writes 0600
        shutil.copyfile(root / REPORT_FILE, shipped_dir() / REPORT_FILE)
    print(table(result["test"]))
    return {**result, "parts": str(parts)}


def shipped_dir() -> Path:
    from zoo.models import trained_dir

    return trained_dir("mova")


def load_shipped():
    """-> (model in eval mode, processor, the parts' metadata) with the shipped trained parts."""
    path = shipped_dir() / PARTS_FILE
    if not path.is_file():  # before loading the bases: that takes a while
        raise FileNotFoundError(f"{path} not found: MoVA ships no trained parts yet; train them with "
                                "`zoo train mova --recipe tiny --set ship=true`")
    language_model, tokenizer, question_tokenizer = load_bases()
    model, processor = build_mova(language_model, tokenizer, question_tokenizer)
    metadata = trained_parts.load_parts(model, path, required=adapter_names(model) + routing_lora_names(model),
                                        hint="zoo train mova --recipe tiny --set ship=true")
    return model.eval(), processor, metadata


@evaluation("mova")
def evaluate_shipped(weights: str | None = None, questions: int | None = None) -> dict:
    if weights is not None:
        raise ValueError("zoo eval mova evaluates the shipped parts only; --weights is not supported for it")
    model, processor, metadata = load_shipped()
    settings = {**TINY, **metadata.get("settings", {})}
    test = vqa.EasyVqa("test", processor, limit=questions or settings["eval_questions"])
    data = MovaVqa(test, processor, range(len(test)), torch.zeros(len(test), model.config.num_experts, dtype=torch.bool))
    report = ablation(model, data, settings, metadata.get("seed", 0))
    print(table(report))
    return report


def table(report: dict) -> str:
    """The ablation as a markdown table (accuracy per question type), the pass-1 picks and the routing cost."""
    head = ["condition", "all", *QUESTION_TYPES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for condition in CONDITIONS:
        row = report["accuracy"][condition]
        lines.append("| " + " | ".join([condition] + [f"{row[k]:.3f}" for k in head[1:]]) + " |")
    names = [n for n in next(iter(report["pass1_picks"].values()), {})]
    lines += ["", "| pass 1 picks | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for kind, shares in report["pass1_picks"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{shares[n]:.2f}" for n in names) + " |")
    lines.append(f"\nrouting pass: {report['routing_seconds_per_question']:.3f} s per question "
                 f"({report['questions']} easy-VQA test questions)")
    return "\n".join(lines)


if __name__ == "__main__":  # threads: torch's default, or OMP_NUM_THREADS (1 is ~10x faster on busy shared cores)
    evaluate_shipped()
