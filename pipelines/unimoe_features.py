"""The pieces of Uni-MoE's tiny recipe (pipelines.train_unimoe) that make training cheap on two CPU cores:
the frozen towers run once per example, and the frozen lower decoder layers run once per example.

    Example (pipelines.unimoe_data) --UniMoeProcessor + the frozen towers, once--> Encoded:
        prompt ids (placeholders expanded), answer ids (+ end of turn),
        image [N, C] (the vision tower's grid, already pooled to the token budget: the connector pools
        before its projector, so pooling here is exact), video [F, N, C] (the same per frame),
        audio [T, C_a] (the trimmed Whisper encoder's frames of the clip)
    embed_cached(model, batch): the connectors (trainable in stage 1) + splice  -> inputs_embeds [B, L, D], modality_ids
    lower layers (frozen and dense in every stage-2/3 model, same weights everywhere) --once, after stage 1-->
        hidden [L, D] per example at the input of layer `first` (the first LoRA / MoE layer)
    layer_slice(model, first, n): the model runs decoder layers [first, n) only, fed the cached hidden states

Why the slice: SmolLM2-135M forwards ~190 tokens/s on the two idle cores here (fp32; bf16 is emulated and
24x slower, zoo.core.precision), so a 20-minute recipe with six trainings cannot run all 30 layers every
step. Stages 2 and 3 and the dense baseline only train the top layers, and everything below them is the
same frozen function of the (stage-1) inputs, so their input is computed once and reused; the logits equal
a full forward's (tests/test_unimoe_recipe.py checks it). The shipped model is an ordinary
UniMoeForConditionalGeneration: the slice is a training and evaluation shortcut only.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from zoo.multimodal.connectors import pool_to_budget
from zoo.multimodal.processing import splice_features
from zoo.multimodal.video import mean_pool_frames

# the media each modality's prompt carries, in order (a spoken question about an image: the image, then the speech)
MEDIA = {"image": ("image",), "speech+image": ("image", "audio"), "speech": ("audio",), "video": ("video",),
         "audio": ("audio",)}
REAL_AUDIO_TOWER = {"kind": "whisper", "name": "tiny.en", "weights": "packaged", "trim": True}
ENCODING_VERSION = 1  # bump when Encoded changes: cached encodings of older versions are rebuilt


@dataclass
class Bases:
    """What every model of the recipe is built from: the frozen dense LLM (placeholder rows added), the
    processor, the tower specs and the config fields they imply. The real ones are `real_bases()`; the
    tests pass tiny ones."""

    language_model: nn.Module
    processor: object  # UniMoeProcessor
    config_fields: dict = field(default_factory=dict)  # vision_tower, audio_tower, image_token_budget, ...

    @property
    def pad_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def num_layers(self) -> int:
        return self.language_model.config.num_hidden_layers

    def config(self, **fields):
        from zoo.models.unimoe import UniMoeConfig

        processor = self.processor
        return UniMoeConfig(text_config=self.language_model.config.to_dict(), image_token_id=processor.image_token_id,
                            video_token_id=processor.video_token_id, audio_token_id=processor.audio_token_id,
                            num_audio_query_tokens=processor.num_audio_query_tokens, **{**self.config_fields, **fields})

    def build(self, **fields):
        """A UniMoeForConditionalGeneration on a private copy of the frozen LLM (its FFNs become experts in place)."""
        from zoo.models.unimoe import UniMoeForConditionalGeneration

        model = UniMoeForConditionalGeneration(self.config(**fields), language_model=copy.deepcopy(self.language_model))
        model.requires_grad_(False)
        return model.eval()


def real_bases(image_tokens: int, audio_queries: int, video_frames: int) -> Bases:
    """SmolLM2-135M-Instruct (fp32, frozen) + the packaged MobileNetV2 (128 px) + Whisper tiny.en (trimmed encoder;
    its decoder is the Q-Former), with the compact ChatML turn of the VL recipes."""
    from transformers import WhisperFeatureExtractor

    from zoo.integrations.assets import IMAGENET_MEAN_STD
    from zoo.models.unimoe import UniMoeProcessor
    from zoo.multimodal.configuration import DEFAULT_VISION_TOWER
    from zoo.multimodal.processing import VisionLanguageImageProcessor

    from .vl_easyvqa import CHAT_TEMPLATE, load_base

    lm, tokenizer = load_base()
    image_processor = VisionLanguageImageProcessor(DEFAULT_VISION_TOWER["image_size"], *IMAGENET_MEAN_STD)
    processor = UniMoeProcessor(image_processor, WhisperFeatureExtractor(), tokenizer, num_image_tokens=image_tokens,
                                num_audio_query_tokens=audio_queries, num_video_frames=video_frames,
                                chat_template=CHAT_TEMPLATE)
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the placeholder ids must be valid rows
    lm.requires_grad_(False)
    return Bases(lm, processor, {"vision_tower": dict(DEFAULT_VISION_TOWER), "audio_tower": dict(REAL_AUDIO_TOWER),
                                 "image_token_budget": image_tokens, "max_video_frames": video_frames})


# -- the frozen towers, once per example ------------------------------------------------------------
@dataclass
class Encoded:
    """One example as the model's frozen towers see it (see the module docstring)."""

    modality: str
    kind: str
    answer: str
    prompt_ids: list[int]
    answer_ids: list[int]
    image: torch.Tensor | None = None  # [N, C]
    video: torch.Tensor | None = None  # [F, N, C]
    audio: torch.Tensor | None = None  # [T, C_a]


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The supervised tokens: the answer, then the end of the assistant turn (SmolLM2's eos is <|im_end|>)."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@torch.no_grad()
def encode(examples, model, processor, batch_size: int = 16, desc: str = "towers") -> list[Encoded]:
    """Run the processor and the frozen towers of `model` once over `examples` (same-modality batches)."""
    out: list[Encoded | None] = [None] * len(examples)
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example.modality, []).append(i)
    budget = model.connector.token_budget
    chunks = [(m, rows[s:s + batch_size]) for m, rows in groups.items() for s in range(0, len(rows), batch_size)]
    for modality, rows in tqdm(chunks, desc=desc, unit="batch", leave=False):
        media = MEDIA[modality]
        chosen = [examples[i] for i in rows]
        inputs = processor(text=[processor.prompt(e.prompt, media=media) for e in chosen],
                           images=[e.image for e in chosen] if "image" in media else None,
                           videos=[e.video for e in chosen] if "video" in media else None,
                           video_fps=[e.fps for e in chosen] if "video" in media else None,
                           audio=[e.audio for e in chosen] if "audio" in media else None,
                           sampling_rate=chosen[0].sampling_rate)
        images = videos = frames = None
        if "image" in media:
            images = pool_to_budget(model.vision_tower(inputs["pixel_values"]), budget)  # [n, N, C]
        if "video" in media:
            pixels = inputs["pixel_values_videos"]  # [n, F, 3, S, S]
            grid = pool_to_budget(model.vision_tower(pixels.flatten(0, 1)), budget)  # [n * F, N, C]
            videos = grid.view(pixels.shape[0], pixels.shape[1], *grid.shape[1:])
        if "audio" in media:
            if bool((inputs["chunks_per_audio"] != 1).any()):
                raise ValueError("the recipe caches one Whisper chunk per clip; a clip is longer than 30 s")
            frames, lengths = model.audio_tower(inputs["input_features"], inputs["feature_lengths"])  # [n, T, C_a]
        for row, (i, example) in enumerate(zip(rows, chosen)):
            ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()
            out[i] = Encoded(modality, example.kind, example.answer, ids, answer_ids(processor.tokenizer, example.answer),
                             image=None if images is None else images[row].clone(),
                             video=None if videos is None else videos[row].clone(),
                             audio=None if frames is None else frames[row, :int(lengths[row])].clone())
    return out


def encoding_key(examples, bases: Bases) -> str:
    """A hash of what decides the encodings: the examples' text and media, the processor's token counts, the towers."""
    digest = hashlib.sha256()
    processor = bases.processor
    digest.update(json.dumps([ENCODING_VERSION, bases.config_fields.get("vision_tower"),
                              bases.config_fields.get("audio_tower"), bases.config_fields.get("image_token_budget"),
                              processor.num_image_tokens, processor.num_audio_query_tokens, processor.num_video_frames,
                              len(processor.tokenizer)], sort_keys=True, default=str).encode())
    for e in examples:
        digest.update(f"{e.modality}|{e.kind}|{e.prompt}|{e.answer}|{e.fps}".encode())
        for media in (e.image, e.audio, e.video):
            if media is not None:
                digest.update(media.tobytes())
    return digest.hexdigest()[:16]


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(obj, partial)
    partial.replace(path)  # a kill leaves the previous file whole


def cached_encode(examples, bases: Bases, model, path: Path, desc: str) -> list[Encoded]:
    """`encode`, stored at `path` with its key; a stored file with another key (other examples or towers) is rebuilt."""
    key = encoding_key(examples, bases)
    if path.is_file():
        state = torch.load(path, weights_only=True)
        if state.get("key") == key:
            return [Encoded(**item) for item in state["items"]]
    encoded = encode(examples, model, bases.processor, desc=desc)
    _atomic_save({"key": key, "items": [vars(e) for e in encoded]}, path)
    return encoded


# -- batches and embeddings -----------------------------------------------------------------------
def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows])


def collate(items: Sequence[Encoded], pad_id: int) -> dict:
    """Right-padded input_ids / attention_mask / labels (answer + end only) [B, L], and the cached tower outputs
    of the batch in reading order: images [n_img, N, C], videos [n_vid, F, N, C], audio [n_aud, T, C_a] + lengths."""
    sequences = [e.prompt_ids + e.answer_ids for e in items]
    labels = [[-100] * len(e.prompt_ids) + e.answer_ids for e in items]
    audio = [e.audio for e in items if e.audio is not None]

    def stacked(name):
        present = [getattr(e, name) for e in items if getattr(e, name) is not None]
        return torch.stack(present) if present else None

    return {"input_ids": _pad(sequences, pad_id), "attention_mask": _pad([[1] * len(s) for s in sequences], 0),
            "labels": _pad(labels, -100), "images": stacked("image"), "videos": stacked("video"),
            "audio": nn.utils.rnn.pad_sequence(audio, batch_first=True) if audio else None,
            "audio_lengths": torch.tensor([len(a) for a in audio]) if audio else None}


def embed_cached(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's `embed` on cached tower outputs: text embeddings, the connectors' outputs at their
    placeholders -> (inputs_embeds [B, L, D], modality_ids [B, L])."""
    config, ids = model.config, batch["input_ids"]
    token_ids = {"image": config.image_token_id, "video": config.video_token_id, "audio": config.audio_token_id}
    is_placeholder = torch.zeros_like(ids, dtype=torch.bool)
    for token_id in token_ids.values():
        is_placeholder |= ids == token_id
    embeds = model.get_input_embeddings()(ids.masked_fill(is_placeholder, 0))  # [B, L, D]
    features = {"image": None, "video": None, "audio": None}
    if batch["images"] is not None:
        features["image"] = model.connector(batch["images"])  # [n_img, N, D]
    if batch["videos"] is not None:
        videos = batch["videos"]  # [n_vid, F, N, C]
        features["video"] = mean_pool_frames(model.connector(videos.flatten(0, 1)), videos.shape[1])  # [n_vid, N, D]
    if batch["audio"] is not None:
        features["audio"] = model.audio_aligner(batch["audio"], batch["audio_lengths"])  # [n_aud, Q, D]
    modality_ids = None
    for modality, token_id in token_ids.items():
        embeds, modality_ids = splice_features(ids, embeds, features[modality], token_id, modality, modality_ids)
    return embeds, modality_ids


# -- the decoder in two parts ---------------------------------------------------------------------
@contextmanager
def layer_slice(model, start: int, stop: int):
    """Within the block `model` runs decoder layers [start, stop) only (the final norm only when stop is the
    last layer); its MoE layer ids are shifted to match, so its forward, losses and routing work unchanged."""
    decoder = model.language_model.model
    layers, norm, moe_ids = decoder.layers, decoder.norm, model.moe_layer_ids
    if not 0 <= start < stop <= len(layers):
        raise ValueError(f"layer slice [{start}, {stop}) outside the model's {len(layers)} layers")
    decoder.layers = nn.ModuleList(layers[start:stop])  # the same modules, not copies
    if stop < len(layers):
        decoder.norm = nn.Identity()
    model.moe_layer_ids = [i - start for i in moe_ids if start <= i < stop]
    try:
        yield model
    finally:
        decoder.layers, decoder.norm, model.moe_layer_ids = layers, norm, moe_ids


@dataclass
class Hidden:
    """Examples at the input of decoder layer `first`: hidden[i] [L_i, D], modality_ids[i] [L_i], labels[i] [L_i]."""

    first: int
    hidden: list[torch.Tensor]
    modality_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    modalities: list[str]  # the example's modality (pipelines.unimoe_data.MODALITIES)

    def __len__(self) -> int:
        return len(self.hidden)

    def batch(self, rows: Sequence[int]) -> dict:
        """Right-padded inputs of `upper_forward`: first, inputs_embeds [B, L, D], modality_ids,
        attention_mask, labels [B, L]."""
        lengths = [len(self.labels[i]) for i in rows]
        width = max(lengths)

        def padded(tensors, value):
            out = tensors[rows[0]].new_full((len(rows), width, *tensors[rows[0]].shape[1:]), value)
            for r, i in enumerate(rows):
                out[r, :lengths[r]] = tensors[i]
            return out

        mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        return {"first": self.first, "inputs_embeds": padded(self.hidden, 0.0), "modality_ids": padded(self.modality_ids, 0),
                "attention_mask": mask, "labels": padded(self.labels, -100)}


@torch.no_grad()
def lower_hidden(model, encoded: Sequence[Encoded], first: int, pad_id: int, batch_size: int = 32,
                 desc: str = "lower layers") -> Hidden:
    """Run embed_cached + decoder layers [0, first) of `model` once over `encoded` (similar lengths batched)."""
    n = len(encoded)
    hidden, modality_ids, labels = [None] * n, [None] * n, [None] * n
    order = sorted(range(n), key=lambda i: len(encoded[i].prompt_ids) + len(encoded[i].answer_ids))
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        rows = order[start:start + batch_size]
        batch = collate([encoded[i] for i in rows], pad_id)
        embeds, modalities = embed_cached(model, batch)
        if first > 0:
            with layer_slice(model, 0, first):
                embeds = model.language_model.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                                    use_cache=False).last_hidden_state  # [B, L, D]
        for r, i in enumerate(rows):
            length = int(batch["attention_mask"][r].sum())
            hidden[i] = embeds[r, :length].clone()
            modality_ids[i], labels[i] = modalities[r, :length].clone(), batch["labels"][r, :length].clone()
    return Hidden(first, hidden, modality_ids, labels, [e.modality for e in encoded])


def upper_forward(model, batch: dict, **kwargs):
    """The model's output from cached hidden states (`Hidden.batch`): decoder layers [first, n) + head + losses."""
    first = batch["first"]
    with layer_slice(model, first, len(model.language_model.model.layers)):
        return model(inputs_embeds=batch["inputs_embeds"], modality_ids=batch["modality_ids"],
                     attention_mask=batch["attention_mask"], labels=batch["labels"], **kwargs)


__all__ = ["Bases", "Encoded", "Hidden", "MEDIA", "REAL_AUDIO_TOWER", "answer_ids", "cached_encode", "collate",
           "embed_cached", "encode", "layer_slice", "lower_hidden", "real_bases", "upper_forward"]
