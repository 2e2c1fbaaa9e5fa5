"""easy-VQA with SmolLM2-135M-Instruct + MobileNetV2 (both packaged real weights): data, model building,
the small trained parts (projector, routers, expert LoRA deltas), evaluation.

Shared by the training recipes (pipelines.train_vl) and the gallery tabs. Answers are single words,
so an answer is correct iff greedy decoding reproduces it and then stops: evaluated teacher-forced
(argmax at every answer position and at <|im_end|>), which is exactly greedy exact match.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from zoo.core.precision import autocast
from zoo.integrations.assets import IMAGENET_MEAN_STD
from zoo.multimodal.processing import VisionLanguageProcessor, preprocess_images
from zoo.multimodal.modeling import DEFAULT_VISION_TOWER, MultimodalMoeConfig, MultimodalMoeForConditionalGeneration

from . import trained_parts
from .train import system_name

# a compact ChatML turn (SmolLM2's own template adds a 20-token system prompt to every sample)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END = "<|im_end|>"
LORA_RANK = 8
IMAGE_TOKENS = 4  # MobileNetV2 at 128 px gives a 4x4 grid of 1280-d features, average-pooled to 2x2
SHIPPED_FILE = "easyvqa-tiny.safetensors"  # in models/<system>/trained/ (zoo.models.trained_dir)


def systems() -> dict[str, tuple[type, type, dict]]:
    """system name -> (config class, model class, recipe overrides)."""
    from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
    from zoo.models.moiie import MoiieConfig, MoiieForConditionalGeneration
    from zoo.models.mote import MoteConfig, MoteForConditionalGeneration

    return {
        "moiie": (MoiieConfig, MoiieForConditionalGeneration, {}),
        "mote": (MoteConfig, MoteForConditionalGeneration, {}),
        "moe_llava": (MoeLlavaConfig, MoeLlavaForConditionalGeneration, {}),
        # dense baseline: the same odd-layer FFNs get the same LoRA delta, no router choice
        "dense_vl": (MultimodalMoeConfig, MultimodalMoeForConditionalGeneration, {"moe_layers": "odd"}),
    }


def shipped_path(system: str) -> Path:
    """The system's shipped trained parts: models/<system>/trained/easyvqa-tiny.safetensors."""
    from zoo.models import trained_dir

    return trained_dir(system_name(system)) / SHIPPED_FILE


# -- model ----------------------------------------------------------------------------------------------
def load_base():
    """(SmolLM2-135M-Instruct fp32, tokenizer) from the packaged GGUF (cached by zoo.integrations.assets)."""
    from zoo.integrations.assets import load_smollm2

    return load_smollm2(dtype=torch.float32, progress=False)


def build(system: str, language_model, tokenizer, **overrides):
    """-> (model, processor): the system's wrapper around the loaded LLM, experts upcycled from its FFNs."""
    known = systems()
    system = system_name(system)
    if system not in known:
        raise ValueError(f"unknown vision-language system {system!r}; known: {sorted(known)}")
    config_class, model_class, defaults = known[system]
    overrides = {"image_token_budget": IMAGE_TOKENS, **defaults, **overrides}
    processor = VisionLanguageProcessor(tokenizer, DEFAULT_VISION_TOWER["image_size"], *IMAGENET_MEAN_STD,
                                        num_image_tokens=overrides["image_token_budget"], chat_template=CHAT_TEMPLATE)
    config = config_class(text_config=language_model.config.to_dict(), vision_tower=DEFAULT_VISION_TOWER,
                          image_token_id=processor.image_token_id, expert_lora_rank=LORA_RANK, **overrides)
    model = model_class(config, language_model=language_model)
    if model.num_image_tokens() != processor.num_image_tokens:
        raise ValueError(f"tower gives {model.num_image_tokens()} tokens, processor expands {processor.num_image_tokens}")
    return model, processor


def trainable_names(model) -> list[str]:
    """Projector, routers and LoRA deltas: the parts the recipes train and the package ships."""
    return [n for n, _ in model.named_parameters()
            if n.startswith("connector.") or ".router." in n or "lora_A" in n or "lora_B" in n]


def set_trainable(model, names) -> int:
    names = set(names)
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
        count += param.numel() if name in names else 0
    return count


def save_parts(model, path: Path, metadata: dict | None = None) -> None:
    trained_parts.save_parts(model, path, trainable_names(model), metadata)


load_parts = trained_parts.load_parts


def load_shipped(system: str):
    """-> (model in eval mode, processor, metadata) with the shipped trained parts."""
    system = system_name(system)
    model, processor = build(system, *load_base())
    metadata = load_parts(model, shipped_path(system))
    return model.eval(), processor, metadata


# -- data -----------------------------------------------------------------------------------------------
class EasyVqa:
    """One split: pixel values for every image (preprocessed once) and tokenised question/answer pairs."""

    def __init__(self, split: str, processor: VisionLanguageProcessor, limit: int | None = None, seed: int = 0):
        import easy_vqa

        if split not in ("train", "test"):
            raise ValueError(f"easy-VQA split must be 'train' or 'test', got {split!r}")
        questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
        paths = getattr(easy_vqa, f"get_{split}_image_paths")()
        order = list(range(len(questions)))
        if limit is not None:  # a fixed random subset, the same for every system
            random.Random(seed).shuffle(order)
            order = sorted(order[:limit])
        self.questions = [questions[i] for i in order]
        self.answers = [answers[i] for i in order]
        used = sorted({image_ids[i] for i in order})
        row = {image_id: r for r, image_id in enumerate(used)}
        self.image_rows = torch.tensor([row[image_ids[i]] for i in order])
        self.pixels = preprocess_images([paths[i] for i in used], processor.image_size, processor.image_mean,
                                        processor.image_std).to(torch.bfloat16)  # [n_images, 3, S, S]
        tok = processor.tokenizer
        prompts = processor.expand_image_tokens([processor.prompt(q) for q in self.questions])
        prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        answer_ids = tok([a + END for a in self.answers], add_special_tokens=False)["input_ids"]
        self.samples = [(p, a) for p, a in zip(prompt_ids, answer_ids)]
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices) -> dict:
        """Right-padded input_ids, attention_mask, labels (answer tokens + <|im_end|> only), pixel_values."""
        rows = [self.samples[i][0] + self.samples[i][1] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(indices):
            prompt, answer = self.samples[i]
            n = len(prompt) + len(answer)
            ids[r, :n] = torch.tensor(prompt + answer)
            labels[r, len(prompt):n] = torch.tensor(answer)
            mask[r, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "pixel_values": self.pixels[self.image_rows[list(indices)]]}


@torch.no_grad()
def correct_answers(model, data: EasyVqa, batch_size: int = 64, progress=None) -> torch.Tensor:
    """[n] bool, greedy exact match, teacher-forced: every answer token and <|im_end|> must be the argmax."""
    model.eval()
    correct = []
    starts = range(0, len(data), batch_size)
    for start in (progress(starts) if progress else starts):
        batch = data.batch(range(start, min(start + batch_size, len(data))))
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch, labels=labels).logits  # [n_supervised, V]
        keep = labels[:, 1:] != -100  # [B, L-1]
        wrong = (logits.argmax(-1) != labels[:, 1:][keep]).float()
        per_sample = torch.zeros(keep.shape[0]).index_add_(0, keep.nonzero()[:, 0], wrong)
        correct.append(per_sample == 0)
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


def accuracy(model, data: EasyVqa, batch_size: int = 64, progress=None) -> float:
    correct = correct_answers(model, data, batch_size, progress)
    return int(correct.sum()) / max(1, len(correct))


def answer_type(answer: str) -> str:
    """easy-VQA asks three kinds of question: is there ...? (yes/no), which shape?, which colour?"""
    if answer in ("yes", "no"):
        return "yes/no"
    return "shape" if answer in ("circle", "rectangle", "triangle") else "colour"


def accuracy_report(model, data: EasyVqa, seed: int = 0) -> dict[str, float]:
    """Accuracy overall and per question type, and the control: the same questions asked about other
    questions' images (a model that ignores the image scores the same on both)."""
    correct = correct_answers(model, data)
    types = [answer_type(a) for a in data.answers]
    report = {"all": correct.float().mean().item()}
    for kind in ("yes/no", "shape", "colour"):
        chosen = torch.tensor([t == kind for t in types])
        report[kind] = correct[chosen].float().mean().item() if chosen.any() else float("nan")
    rows = data.image_rows
    try:
        data.image_rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]
        report["images shuffled"] = correct_answers(model, data).float().mean().item()
    finally:
        data.image_rows = rows
    return {k: round(v, 4) for k, v in report.items()}
