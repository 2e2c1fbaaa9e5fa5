"""`zoo train mome --recipe tiny` (MoME) and `--recipe tiny-lora` (the paper's baseline: one LoRA +
projector per compression rate): speech recognition with frozen SmolLM2-135M + frozen Whisper tiny.en.

    data      espeak-ng speech from real text (zoo.pipelines.speech_data, 2000 train / 100 validation)
    features  the frozen encoder runs once per utterance on its own frames (trim: the connector is
              trained on trimmed features) and the frames are cached; training never runs the tower
    stage 0   the connector aligned before the LLM sees it (pipelines.speech_alignment): the rate-4 projector
              trained by CTC over the transcripts' SmolLM2 tokens (cosine to their embedding rows), 600 steps of
              32, its LayerNorm rescaled to the embedding norm, then copied into every rate's projector. Without
              it the frozen LLM learned to ignore the audio tokens: the LM loss sat on the text prior's plateau
              (3.7-3.9 for 300 steps) and greedy WER was ~2 (README)
    MoME      per-rate projectors + one MoME module per decoder layer (parallel to attention; one
              router and one expert set for every rate), AdamW lr 1e-3, cosine; each step averages
              the LM loss over `rates_per_step` rates, rotating through all rates (2 of 4 per step:
              the whole set per step does not fit the 20-minute budget here)
    LoRA      one model per rate (PEFT LoRA on q/v, r 8, + that rate's projector, from the same stage 0), each trained
              for as many steps as MoME trains that rate, same batch size and lr: equal compute
    test      WER per rate on the asterisk prompts (real voice, 8 kHz) and the pyannote utterances,
              never trained or tuned on; greedy decoding

Through accelerate (bf16 autocast where the CPU has native bf16, else fp32: zoo.core.precision); a checkpoint (trainable tensors + optimizer + scheduler +
step + RNG, zoo.pipelines.checkpoints) every `save_every` steps, atomic, the last two kept; `--resume` continues
from the newest and replays the batch draws, so a resumed run sees the batches of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from zoo.core.precision import autocast, mixed_precision
from zoo.integrations.assets import cache_dir

from . import speech_data
from .checkpoints import Checkpoints
from .speech_metrics import wer
from .trained_parts import load_parts, round_as_shipped_, save_parts
from .train import TrainOptions, cpu_accelerator, evaluation, recipe, release

TINY = {"steps": 90, "batch_size": 16, "lr": 1e-3, "rates": [2, 4, 8, 16], "rates_per_step": 2,
        "train_utterances": 2000, "validation_utterances": 100, "save_every": 25, "max_new_tokens": 32,
        "num_routed_experts": 7, "num_shared_experts": 1, "num_experts_per_tok": 2, "bottleneck_size": 12,
        "lora_rank": 8, "mome_layers": "all", "eval_limit": None,
        "align_steps": 600, "align_batch_size": 32, "align_lr": 2e-3, "align_rate": 4}
INSTRUCTION = "transcribe the audio"
TOWER = {"kind": "whisper", "name": "tiny.en", "weights": "packaged", "trim": True}


# -- the frozen encoder's frames, computed once -----------------------------------------------------
@dataclass
class EncodedSpeech:
    """Utterances as the frozen tower's frames: frames[i] [T_i, C] (50 Hz), texts[i]."""

    frames: list[torch.Tensor]
    texts: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def encode(samples, tower, feature_extractor, batch_size: int = 16, desc: str = "encoding") -> EncodedSpeech:
    from zoo.multimodal.audio_tower import mel_frames

    order = sorted(range(len(samples)), key=lambda i: len(samples[i].audio))  # similar lengths batch together
    frames: list[torch.Tensor | None] = [None] * len(samples)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            rows = order[start:start + batch_size]
            audio = [samples[i].audio for i in rows]
            mel = feature_extractor(audio, sampling_rate=16000, padding="max_length", return_tensors="pt").input_features
            lengths = torch.tensor([mel_frames(len(a)) for a in audio])
            out, out_lengths = tower(mel, lengths)
            for row, i in enumerate(rows):
                frames[i] = out[row, : int(out_lengths[row])].float().clone()
    return EncodedSpeech(frames, [s.text for s in samples], [s.source for s in samples])


def cached_encoding(name: str, samples, tower, feature_extractor) -> EncodedSpeech:
    """`encode`, cached under the user cache by a key of the texts, audio lengths and the tower spec."""
    import hashlib

    key = hashlib.sha256(json.dumps([TOWER, [(s.text, len(s.audio), float(s.audio[:64].sum())) for s in samples]])
                         .encode()).hexdigest()[:16]
    path = cache_dir() / "speech" / f"frames-{name}-{key}.safetensors"
    if path.is_file():
        try:
            state = load_file(str(path))
            lengths = state["lengths"].tolist()
            frames = list(torch.split(state["frames"], lengths))
            if len(frames) == len(samples):
                return EncodedSpeech(frames, [s.text for s in samples], [s.source for s in samples])
        except Exception as error:  # a damaged cache is rebuilt
            print(f"rebuilding {path}: {error}")
    encoded = encode(samples, tower, feature_extractor, desc=f"encoding {name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({"frames": torch.cat(encoded.frames), "lengths": torch.tensor([len(f) for f in encoded.frames])},
              str(partial))
    partial.replace(path)
    return encoded


# -- batches ----------------------------------------------------------------------------------------
def batch_for_rate(encoded: EncodedSpeech, rows: list[int], rate: int, processor, with_answers: bool = True) -> dict:
    """Prompt ids with the right number of <audio> placeholders for `rate`, labels on the transcript
    (+ EOS), the cached frames padded to [B, T, C]; right padding for training, left for generation."""
    from zoo.multimodal.matryoshka import compressed_lengths

    tokenizer = processor.tokenizer
    frames = [encoded.frames[i] for i in rows]
    lengths = torch.tensor([len(f) for f in frames])
    counts = compressed_lengths(lengths, rate).tolist()
    prompts = processor.expand_audio_tokens([processor.prompt(INSTRUCTION)] * len(rows), counts)
    sequences, labels = [], []
    for prompt, i in zip(prompts, rows):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(encoded.texts[i], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] \
            if with_answers else []
        sequences.append(ids + answer)
        labels.append([-100] * len(ids) + answer)
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    left = not with_answers
    def padded(row, value):
        fill = [value] * (width - len(row))
        return fill + row if left else row + fill
    batch = {
        "input_ids": torch.tensor([padded(s, pad) for s in sequences]),
        "attention_mask": torch.tensor([padded([1] * len(s), 0) for s in sequences]),
        "audio_frames": torch.nn.utils.rnn.pad_sequence(frames, batch_first=True),
        "audio_frame_lengths": lengths,
        "compression_rate": rate,
    }
    if with_answers:
        batch["labels"] = torch.tensor([padded(lab, -100) for lab in labels])
    return batch


def rates_of_step(step: int, rates: list[int], per_step: int) -> list[int]:
    """Rotate through the rates: step s trains rates s*k .. s*k+k-1 (mod the number of rates)."""
    return [rates[(step * per_step + j) % len(rates)] for j in range(per_step)]


# -- the models -------------------------------------------------------------------------------------
def load_bases():
    """(SmolLM2-135M-Instruct fp32 with the <audio> token added, the speech processor)."""
    from transformers import WhisperFeatureExtractor

    from zoo.integrations.assets import load_smollm2
    from zoo.multimodal.speech_processing import SpeechLanguageProcessor

    lm, tokenizer = load_smollm2(dtype=torch.float32, progress=False)
    processor = SpeechLanguageProcessor(WhisperFeatureExtractor(), tokenizer)
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the placeholder id must be a valid row
    lm.requires_grad_(False)
    return lm, processor


def build_mome(lm, processor, settings: dict):
    from zoo.models.mome import MomeConfig, MomeForSpeechRecognition
    from zoo.models.mome.processing_mome import transcription_prompt_ids

    config = MomeConfig(
        text_config=lm.config, audio_tower=dict(TOWER), audio_token_id=processor.audio_token_id,
        audio_compression_rates=list(settings["rates"]), inference_compression_rate=settings["rates"][0],
        mome_placement="attention", mome_layers=settings["mome_layers"], num_routed_experts=settings["num_routed_experts"],
        num_shared_experts=settings["num_shared_experts"], num_experts_per_tok=settings["num_experts_per_tok"],
        bottleneck_size=settings["bottleneck_size"], transcription_prompt_ids=transcription_prompt_ids(processor, INSTRUCTION))
    return MomeForSpeechRecognition(config, language_model=lm)


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def save_trained(model, path: Path, metadata: dict) -> None:
    save_parts(model, path, trainable_names(model), metadata)


def load_trained(model, path: Path) -> dict:
    return load_parts(model, path, required=trainable_names(model), hint="zoo train mome --recipe tiny")


# -- stage 0: the projector aligned to the LLM's embeddings (pipelines.speech_alignment) --------------------
def aligned_projectors_(model, data: EncodedSpeech, processor, settings: dict, root: Path, resume: bool,
                        seed: int) -> None:
    """Every rate's projector of `model` starts from the CTC-aligned one, trained once per run folder and settings
    (the MoME and per-rate LoRA recipes share it: the same start for both)."""
    import hashlib

    from zoo.multimodal.matryoshka import MatryoshkaCompressor

    from .speech_alignment import aligned_projector, initialise_projectors_

    keys = ("align_steps", "align_batch_size", "align_lr", "align_rate", "train_utterances")
    key = hashlib.sha256(json.dumps([{k: settings[k] for k in keys}, seed, TOWER]).encode()).hexdigest()[:12]
    config, compressor = model.config, model.audio_projectors
    torch.manual_seed(seed)
    standalone = MatryoshkaCompressor(in_features=compressor.in_features, out_features=compressor.out_features,
                                      rates=[settings["align_rate"]], mode=config.compression,
                                      intermediate_size=config.projector_hidden_size)
    state = aligned_projector(root / f"aligned-projector-{key}.safetensors", standalone, data, processor.tokenizer,
                              model.get_input_embeddings().weight.detach(), {**settings, "save_every": 100}, resume,
                              seed, root / f"align-{key}")
    initialise_projectors_(compressor, state)


# -- training ---------------------------------------------------------------------------------------
def train(model, data: EncodedSpeech, processor, schedule: list[list[int]], settings: dict, directory: Path,
          resume: bool, seed: int, label: str) -> float:
    """One optimizer step per entry of `schedule` (the rates it averages); checkpoints + exact resume."""
    names = trainable_names(model)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    steps = len(schedule)
    optimizer = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    accelerator = cpu_accelerator(mixed_precision=mixed_precision())
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    checkpoints = Checkpoints(directory, fingerprint={"names": names, "schedule": schedule, "seed": seed,
                                                      **{k: settings[k] for k in ("batch_size", "lr")}})
    if not resume:
        checkpoints.clear()
    step, extra = checkpoints.resume(trainable, optimizer, scheduler, required=resume)
    losses = list(extra.get("recent_losses", []))
    rng = random.Random(seed * 1000 + 7)
    for _ in range(step):  # replay the draws already taken
        rng.sample(range(len(data)), settings["batch_size"])
    model.train()
    bar = tqdm(total=steps, initial=step, desc=label, unit="step")
    while step < steps:
        rows = rng.sample(range(len(data)), settings["batch_size"])
        rates = schedule[step]
        total = 0.0
        for rate in rates:
            with accelerator.autocast():
                out = model(**batch_for_rate(data, rows, rate, processor))
            accelerator.backward(out.loss / len(rates))
            total += out.loss.item() / len(rates)
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
        step += 1
        losses.append(total)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if step % settings["save_every"] == 0 or step == steps:
            checkpoints.save(step, trainable, optimizer, scheduler, recent_losses=losses[-20:])
    bar.close()
    release(accelerator, model).eval()
    return sum(losses[-20:]) / max(1, len(losses[-20:]))


# -- evaluation -------------------------------------------------------------------------------------
@torch.no_grad()
def transcribe(model, data: EncodedSpeech, processor, rate: int, settings: dict, batch_size: int = 32,
               histogram: bool = False):
    """Greedy transcripts of every utterance at `rate` (+ the audio tokens' expert histogram per layer)."""
    tokenizer = processor.tokenizer
    hypotheses, counts = [""] * len(data), None
    order = sorted(range(len(data)), key=lambda i: len(data.frames[i]))  # similar lengths share a batch
    for start in range(0, len(data), batch_size):
        rows = order[start:start + batch_size]
        batch = batch_for_rate(data, rows, rate, processor, with_answers=False)
        with autocast():
            if histogram:  # one teacher-free forward over the prompt: which experts the audio tokens chose
                out = model(**{k: v for k, v in batch.items()}, logits_to_keep=1)
                layer_counts = model.routing_histograms(out.modality_ids, "audio")
                counts = layer_counts if counts is None else counts + layer_counts
            generated = model.generate(**batch, max_new_tokens=settings["max_new_tokens"], do_sample=False,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        for i, text in zip(rows, tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)):
            hypotheses[i] = speech_data.spoken_text(text)
    return hypotheses, counts


def held_out_sets(tower, feature_extractor, settings: dict) -> dict[str, EncodedSpeech]:
    """The two held-out sets (the first `eval_limit` utterances of each when set: smoke tests only)."""
    limit = settings.get("eval_limit")
    sets = {"asterisk": speech_data.asterisk_prompts(), "pyannote": speech_data.pyannote_utterances()}
    return {name: cached_encoding(name, samples[:limit], tower, feature_extractor) for name, samples in sets.items()}


def evaluate_rates(model_for_rate, sets: dict[str, EncodedSpeech], processor, settings: dict) -> dict:
    """{set: {rate: WER}} (+ MoME's per-rate expert histograms when the model has routers)."""
    report = {name: {} for name in sets}
    histograms = {}
    for rate in settings["rates"]:
        model = model_for_rate(rate)
        has_routers = bool(getattr(model, "mome_modules", None))
        for name, data in sets.items():
            hyps, counts = transcribe(model, data, processor, rate, settings, histogram=has_routers and name == "asterisk")
            report[name][str(rate)] = round(wer(data.texts, hyps), 4)
            if counts is not None:
                histograms[str(rate)] = (counts.sum(0).float() / counts.sum()).tolist()  # share per expert, all layers
    if histograms:
        report["audio_expert_share"] = histograms
    return report


@torch.no_grad()
def whisper_reference(settings: dict, batch_size: int = 16) -> dict:
    """WER of Whisper tiny.en's own decoder on the same held-out audio (the model a user would pick
    instead): standard 30 s padded input, greedy, numbers spelled out like the references."""
    from zoo.integrations.whisper_weights import load_whisper

    whisper, processor = load_whisper("tiny.en", progress=False)
    limit = settings.get("eval_limit")
    report = {}
    for name, samples in (("asterisk", speech_data.asterisk_prompts()), ("pyannote", speech_data.pyannote_utterances())):
        samples = samples[:limit]
        hypotheses = []
        for start in tqdm(range(0, len(samples), batch_size), desc=f"Whisper tiny.en on {name}", unit="batch"):
            audio = [s.audio for s in samples[start:start + batch_size]]
            features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
            out = whisper.generate(features, max_new_tokens=96)
            hypotheses += [speech_data.spoken_text(h) for h in processor.batch_decode(out, skip_special_tokens=True)]
        report[name] = round(wer([s.text for s in samples], hypotheses), 4)
    return report


# -- recipes ----------------------------------------------------------------------------------------
def _settings(options: TrainOptions) -> dict:
    settings = {**TINY, **{k: v for k, v in options.extra.items() if k in TINY}}
    if options.max_steps is not None:
        if options.max_steps <= 0:
            raise ValueError(f"--max-steps must be a positive integer, got {options.max_steps}")
        settings["steps"] = options.max_steps
        settings["align_steps"] = min(settings["align_steps"], options.max_steps)  # a smoke run runs every stage
    return settings


def _data(settings: dict, tower, feature_extractor, seed: int) -> EncodedSpeech:
    samples = speech_data.synthetic_speech("train", n=settings["train_utterances"], seed=seed)
    return cached_encoding(f"train-{settings['train_utterances']}-{seed}", samples, tower, feature_extractor)


def train_mome(options: TrainOptions) -> dict:
    settings = _settings(options)
    root = Path(options.output_dir or cache_dir() / "runs" / "mome-tiny")
    torch.manual_seed(options.seed)
    started = time.time()
    lm, processor = load_bases()
    model = build_mome(lm, processor, settings)
    data = _data(settings, model.audio_tower, processor.feature_extractor, options.seed)
    aligned_projectors_(model, data, processor, settings, root, options.resume, options.seed)
    schedule = [rates_of_step(s, settings["rates"], settings["rates_per_step"]) for s in range(settings["steps"])]
    loss = train(model, data, processor, schedule, settings, root / "mome", options.resume, options.seed, "MoME")
    train_minutes = (time.time() - started) / 60
    round_as_shipped_(model, trainable_names(model))  # the report is the shipped (bf16) parts' report
    sets = held_out_sets(model.audio_tower, processor.feature_extractor, settings)
    report = evaluate_rates(lambda rate: model, sets, processor, settings)
    metadata = {"system": "mome", "settings": settings, "train_minutes": round(train_minutes, 1),
                "final_train_loss": round(loss, 4), "wer": report,
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    parts = root / "mome-tiny.safetensors"
    save_trained(model, parts, metadata)
    if options.extra.get("ship"):
        from zoo.models import trained_dir

        shutil.copy(parts, trained_dir("mome") / "speech-tiny.safetensors")
    (root / "mome-results.json").write_text(json.dumps(metadata, indent=2))
    return {**metadata, "parts": str(parts)}


def train_per_rate_lora(options: TrainOptions) -> dict:
    """The paper's baseline: per rate, a fresh copy of the frozen LLM with a PEFT LoRA (q, v) and that rate's
    projector, trained for as many steps on its rate as MoME trains that rate (equal compute), then tested."""
    import copy

    from peft import LoraConfig, get_peft_model

    settings = _settings(options)
    root = Path(options.output_dir or cache_dir() / "runs" / "mome-tiny")
    started = time.time()
    lm, processor = load_bases()
    mome_schedule = [rates_of_step(s, settings["rates"], settings["rates_per_step"]) for s in range(settings["steps"])]
    report: dict = {}
    data = sets = None
    for rate in settings["rates"]:
        torch.manual_seed(options.seed)
        model = build_mome(copy.deepcopy(lm), processor, {**settings, "rates": [rate], "mome_layers": "none"})
        if data is None:
            data = _data(settings, model.audio_tower, processor.feature_extractor, options.seed)
            sets = held_out_sets(model.audio_tower, processor.feature_extractor, settings)
        aligned_projectors_(model, data, processor, settings, root, options.resume, options.seed)
        model.language_model = get_peft_model(model.language_model, LoraConfig(
            r=settings["lora_rank"], lora_alpha=2 * settings["lora_rank"], target_modules=["q_proj", "v_proj"],
            lora_dropout=0.0))
        steps = sum(rate in rates for rates in mome_schedule)
        train(model, data, processor, [[rate]] * steps, settings, root / f"lora-rate{rate}", options.resume,
              options.seed, f"LoRA rate {rate}")
        round_as_shipped_(model, trainable_names(model))
        save_trained(model, root / f"lora-rate{rate}.safetensors", {"rate": rate, "steps": steps})
        single = evaluate_rates(lambda r, m=model: m, sets, processor, {**settings, "rates": [rate]})
        for name in sets:
            report.setdefault(name, {}).update(single[name])
        del model
    metadata = {"system": "per-rate LoRA", "settings": settings, "train_minutes": round((time.time() - started) / 60, 1),
                "wer": report, "whisper_tiny_en_wer": whisper_reference(settings)}
    (root / "lora-results.json").write_text(json.dumps(metadata, indent=2))
    return metadata


recipe("mome", "tiny")(train_mome)
recipe("mome", "tiny-lora")(train_per_rate_lora)


@evaluation("mome")
def evaluate_shipped(weights: str | None) -> dict:
    from zoo.models import trained_dir

    settings = dict(TINY)
    lm, processor = load_bases()
    model = build_mome(lm, processor, settings)
    metadata = load_trained(model, Path(weights) if weights else trained_dir("mome") / "speech-tiny.safetensors")
    model.eval()
    sets = held_out_sets(model.audio_tower, processor.feature_extractor, settings)
    return {"wer": evaluate_rates(lambda rate: model, sets, processor, settings), "trained": metadata}
