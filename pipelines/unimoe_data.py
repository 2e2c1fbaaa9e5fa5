"""The mixed-modality instruction data of Uni-MoE's tiny recipe: short-answer questions about an image,
an image plus a spoken question, speech alone, a short video, and non-speech audio, each with a
train, validation and test split, so accuracy can be reported per modality.

    mixed_examples(split, n_per_modality, seed)   -> list[Example], grouped by modality (MODALITIES order)
    image_examples / spoken_image_examples / speech_examples / video_examples / audio_examples
                                  (split, n, seed) -> list[Example] of one modality
    exact_match(prediction, answer) -> bool        majority_baseline(examples, reference=None) -> {modality: acc}

An `Example` holds `modality`, `kind` (the question family inside the modality), `question` (for a
spoken question: the words the speech says), `prompt` (the text the language model sees: the
question itself, or a fixed instruction when the question is spoken), a short `answer` (one to four
lower-case words, numbers always spelled out), and its media: `image` uint8 [64, 64, 3], `audio`
float32 [n] at 16 kHz, `video` uint8 [frames, H, W, 3] with `fps`. Everything is deterministic given
(split, n, seed); `seed` changes which examples are drawn, never which split an item belongs to.

What each modality holds (M = share of the majority answer; `python -m zoo.pipelines.unimoe_data
--n 400` prints it per split: image 0.17-0.19, speech+image 0.17-0.21, speech 0.05-0.07, video
0.12-0.15, audio 0.14-0.16, the last two mostly "one" from the counting questions)
    image         easy-VQA (pip `easy-vqa`, real VQA data with a fixed split) as it is: its test split
                  is the test split; validation is the train images whose id is a multiple of 10, train
                  the others, so the three share no image. The questions are drawn one third each from
                  the yes/no, shape and colour questions (easy-VQA itself is 74 % yes/no), so the
                  majority answer ("yes" or "no") covers about 1/6 and not 37 %.
    speech+image  the same kind of easy-VQA draw (its own stream), the question spoken by espeak-ng
                  with speech_data's voices (8 accents x 20 voices, 4 speeds and pitches) but always
                  wideband and at most mildly noisy (white/pink at 30 or 20 dB for 2/3 of them):
                  Whisper tiny.en already mishears half the words of clean espeak-ng questions
                  (WER 0.50 clean, 0.63 with speech_data's telephone band and 15 dB noise, on 24
                  questions), and nothing here asks for robustness to the channel. `prompt` is
                  SPOKEN_IMAGE_PROMPT.
    speech        half "arithmetic": a sum or difference of two numbers 0-20 whose result is 0-20
                  ("what is three plus four" or "three plus four" -> "seven"), prompt
                  ARITHMETIC_PROMPT; half "number": a number 0-99 said alone ("forty two" -> "forty
                  two"), prompt NUMBER_PROMPT, in speech_data's full voice mix (30 % telephone band,
                  like the 8 kHz test voice; noise at 30/20/15 dB for 3/4). The 462 (a, op, b)
                  triples are split by a hash of the triple (70 % train, 10 % validation, 20 % test),
                  so no test sum is ever heard in training, in either phrasing. Train and validation
                  are espeak-ng; **the test split is real human speech** (the Asterisk "Allison"
                  prompts, Debian asterisk-core-sounds-en-wav, never trained on): numbers 0-99 said
                  the way Asterisk says them, digits/N for 0-20 and the tens, digits/<tens> +
                  digits/<ones> otherwise, and the test sums as digits/a + letters/plus (or
                  digits/minus) + digits/b, each piece trimmed to its speech (+40 ms) and joined with
                  60 ms of silence. So the test measures transfer from synthetic to real voices. It
                  holds at most 100 numbers and 82 sums, so `speech_test_limit()` = 164 examples (a
                  larger request raises). Every result 0-20 has 22 triples, so M is about 1/21 for
                  sums and 1/100 for numbers.
    video         pipelines.moving_shapes: 8 frames of 64 px at 4 fps, one or two shapes (half each)
                  moving left/right/up/down; a third each of "which direction does the (red circle)
                  move?", "what color is the (circle)?", "which shape appears?" / "which shape moves
                  left?". Splits are independent random streams.
    audio         pipelines.tone_audio: a quarter each of "which keys are pressed?" (1-4 DTMF keys
                  of a phone keypad, answered as words: "one five pound"), "how many keys are
                  pressed?", "how many beeps are there?" (1-6 beeps, 300-3000 Hz) and "is the beep high
                  or low?" (250-500 Hz or 1500-3000 Hz), with 0.1-0.5 s of silence before and after,
                  white/pink noise at 30/20/10 dB for 3/4 of them and a random gain.

Answers are compared with `exact_match`: both sides in speech_data's `spoken_text` form (numbers
spelled out, lower case, punctuation dropped), so "7." matches "seven".

Speed and cache: only the espeak-ng speech costs time (25-40 utterances/s with 3 espeak-ng
processes on the 2 shared cores); it is rendered through speech_data's `render_many` and cached with
speech_data's cache format under `cache_dir()/unimoe/`, keyed by a hash of everything that decides
the audio (the texts and voice parameters of the whole request, the espeak-ng version, both
generator versions), so a second call reads it. Images, videos and tones are rebuilt each call
(milliseconds per example).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from zoo.integrations.assets import cache_dir

from . import moving_shapes, speech_data, tone_audio
from .speech_data import SAMPLING_RATE, number_to_words, spoken_text

MODALITIES = ("image", "speech+image", "speech", "video", "audio")
SPLITS = ("train", "validation", "test")
SPOKEN_IMAGE_PROMPT = "Answer the spoken question about the image."
ARITHMETIC_PROMPT = "Answer the spoken question."
NUMBER_PROMPT = "Which number is spoken?"
MAX_OPERAND = 20
MAX_SPOKEN_NUMBER = 99
VIDEO_FRAMES, VIDEO_SIZE, VIDEO_FPS = 8, 64, 4.0
EASYVQA_VALIDATION_EVERY = 10  # train image ids divisible by this are the validation images
TRIPLE_SPLIT_PERCENT = {"test": 20, "validation": 10}  # the rest is train
AUDIO_SNRS_DB = (None, 30.0, 20.0, 10.0)
QUESTION_SNRS_DB = (None, 30.0, 20.0)  # spoken image questions: see the module docstring
KEY_WORDS = {**{str(d): number_to_words(d) for d in range(10)}, "*": "star", "#": "pound"}

_VERSION = 1  # bump when any draw changes: cached speech of older versions is then ignored


@dataclass(frozen=True, eq=False)
class Example:
    """One instruction example. Media not used by the modality are None."""

    modality: str
    kind: str
    question: str
    prompt: str
    answer: str
    image: np.ndarray | None = None  # uint8 [H, W, 3]
    audio: np.ndarray | None = None  # float32 [n] at SAMPLING_RATE
    video: np.ndarray | None = None  # uint8 [frames, H, W, 3]
    fps: float | None = None
    source: str = ""
    info: dict = field(default_factory=dict)
    sampling_rate: int = SAMPLING_RATE


def exact_match(prediction: str, answer: str) -> bool:
    """True when both say the same words once numbers are spelled out and case/punctuation dropped."""
    return spoken_text(prediction) == spoken_text(answer)


def majority_baseline(examples, reference=None) -> dict[str, float]:
    """Per modality, the accuracy of always answering that modality's most frequent answer.

    The answer is counted in `reference` (e.g. the train split) when given, else in `examples`
    itself (the best any constant answer can do there)."""
    counted = reference if reference is not None else examples
    majority = {}
    for modality in {e.modality for e in examples}:
        answers = Counter(spoken_text(e.answer) for e in counted if e.modality == modality)
        majority[modality] = answers.most_common(1)[0][0] if answers else None
    scores = {}
    for modality in MODALITIES:
        chosen = [e for e in examples if e.modality == modality]
        if chosen:
            scores[modality] = sum(spoken_text(e.answer) == majority[modality] for e in chosen) / len(chosen)
    return scores


def _check(split: str, n: int, seed: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _rng(split: str, modality: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), MODALITIES.index(modality), _VERSION])


def _balanced(kinds, n: int, rng: np.random.Generator) -> list:
    """n items cycling through `kinds`, shuffled: the kinds' counts differ by at most one."""
    return [kinds[i] for i in rng.permutation([i % len(kinds) for i in range(n)])]


# -- spoken audio: espeak-ng through speech_data, cached --------------------------------------------
def _spoken_audio(plan) -> list[np.ndarray]:
    """Render (text, source, UtteranceParams) triples with espeak-ng, through a content-keyed cache."""
    key = json.dumps({"version": _VERSION, "speech_data": speech_data.GENERATOR_VERSION,
                      "espeak": speech_data.espeak_version(),
                      "plan": [[t, s, p.__dict__] for t, s, p in plan]}, sort_keys=True)
    folder = cache_dir() / "unimoe" / f"spoken-n{len(plan)}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    samples = speech_data.read_cache(folder, len(plan))
    if samples is None:
        speech_data.write_cache(folder, plan, speech_data.render_many(plan))
        samples = speech_data.read_cache(folder, len(plan))
        if samples is None:
            raise RuntimeError(f"spoken-question cache at {folder} could not be read back after writing it")
    return [s.audio for s in samples]


# -- image and speech+image: easy-VQA --------------------------------------------------------------
@lru_cache(maxsize=len(SPLITS))
def _easyvqa_pool(split: str) -> dict[str, list[tuple[str, str, int, str]]]:
    """answer type ("yes/no", "shape", "colour") -> (question, answer, image id, image path) of the split."""
    import easy_vqa

    from .vl_easyvqa import answer_type

    package_split = "test" if split == "test" else "train"
    questions, answers, image_ids = getattr(easy_vqa, f"get_{package_split}_questions")()
    paths = getattr(easy_vqa, f"get_{package_split}_image_paths")()
    pool = {"yes/no": [], "shape": [], "colour": []}
    for question, answer, image_id in zip(questions, answers, image_ids):
        if split != "test" and (image_id % EASYVQA_VALIDATION_EVERY == 0) != (split == "validation"):
            continue
        pool[answer_type(answer)].append((question, answer, image_id, paths[image_id]))
    return pool


def _easyvqa_draw(split: str, n: int, rng: np.random.Generator) -> list[tuple[str, str, str, int, str]]:
    """n (answer type, question, answer, image id, path), a third of each answer type, no question twice."""
    pool = _easyvqa_pool(split)
    order = {kind: iter(rng.permutation(len(items))) for kind, items in pool.items()}
    draw = []
    for kind in _balanced(list(pool), n, rng):
        index = next(order[kind], None)
        if index is None:
            raise ValueError(f"n={n} asks for more easy-VQA {kind} questions than the {split} split holds "
                             f"({len(pool[kind])})")
        draw.append((kind, *pool[kind][index]))
    return draw


def _question_voice(rng: np.random.Generator) -> speech_data.UtteranceParams:
    """speech_data's voice draw, made wideband and at most mildly noisy."""
    params = speech_data.draw_params(rng)
    return replace(params, telephone=False, snr_db=QUESTION_SNRS_DB[int(rng.integers(len(QUESTION_SNRS_DB)))])


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def image_examples(split: str, n: int, seed: int = 0) -> list[Example]:
    """easy-VQA questions about their image, a third each yes/no, shape and colour."""
    _check(split, n, seed)
    return [Example("image", kind, question, question, answer, image=_read_image(path),
                    source=f"easy-vqa:{'test' if split == 'test' else 'train'}:{image_id}")
            for kind, question, answer, image_id, path in _easyvqa_draw(split, n, _rng(split, "image", seed))]


def spoken_image_examples(split: str, n: int, seed: int = 0) -> list[Example]:
    """easy-VQA questions spoken by espeak-ng, with their image; the prompt is SPOKEN_IMAGE_PROMPT."""
    _check(split, n, seed)
    rng = _rng(split, "speech+image", seed)
    draw = _easyvqa_draw(split, n, rng)
    plan = [(question, "espeak", _question_voice(rng)) for _, question, *_ in draw]
    return [Example("speech+image", kind, question, SPOKEN_IMAGE_PROMPT, answer, image=_read_image(path),
                    audio=audio, source=f"easy-vqa:{'test' if split == 'test' else 'train'}:{image_id}+espeak",
                    info=dict(params.__dict__))
            for (kind, question, answer, image_id, path), audio, (_, _, params) in zip(draw, _spoken_audio(plan), plan)]


# -- speech alone: sums and numbers ----------------------------------------------------------------
def _triple_split(a: int, op: str, b: int) -> str:
    bucket = int.from_bytes(hashlib.blake2b(f"{a}{op}{b}".encode(), digest_size=8).digest(), "big") % 100
    if bucket < TRIPLE_SPLIT_PERCENT["test"]:
        return "test"
    return "validation" if bucket < sum(TRIPLE_SPLIT_PERCENT.values()) else "train"


@lru_cache(maxsize=len(SPLITS))
def arithmetic_triples(split: str) -> tuple[tuple[int, str, int, int], ...]:
    """(a, "plus" | "minus", b, result) with a, b, result in 0..MAX_OPERAND, of one split."""
    triples = [(a, "plus", b, a + b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1 - a)]
    triples += [(a, "minus", b, a - b) for a in range(MAX_OPERAND + 1) for b in range(a + 1)]
    return tuple(t for t in triples if _triple_split(*t[:3]) == split)


@lru_cache(maxsize=1)
def _asterisk_words() -> dict[str, np.ndarray]:
    """Spoken word -> the Asterisk recording of it (16 kHz), for the digits, "plus" and "minus"."""
    wanted = {f"digits/{k}": number_to_words(k) for k in list(range(21)) + list(range(30, 100, 10))}
    wanted.update({"letters/plus": "plus", "digits/minus": "minus"})
    found = {}
    for sample in speech_data.asterisk_prompts():
        name = sample.source.removeprefix("asterisk:")
        if name in wanted:
            if spoken_text(sample.text) != wanted[name]:  # the documented transcript must say what we assume
                raise ValueError(f"asterisk prompt {name} says {sample.text!r}, expected {wanted[name]!r}")
            found[wanted[name]] = _trim(sample.audio)
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise FileNotFoundError(f"Asterisk prompts missing for {missing}; install asterisk-core-sounds-en-wav")
    return found


def _trim(audio: np.ndarray, margin_s: float = 0.04) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    margin = round(margin_s * SAMPLING_RATE)
    return audio[max(0, loud[0] - margin): loud[-1] + margin + 1]


def asterisk_phrase(words: str, gap_s: float = 0.06) -> np.ndarray:
    """Real-voice audio of "forty two" / "three plus four" joined from Asterisk's word recordings
    ("forty two" = digits/40 + digits/2, as Asterisk's own SayNumber plays it)."""
    recordings, pieces = _asterisk_words(), []
    for word in words.split():  # "forty two" -> digits/40, digits/2
        if word not in recordings:
            raise ValueError(f"no Asterisk recording for {word!r} (in {words!r})")
        pieces += [recordings[word], np.zeros(round(gap_s * SAMPLING_RATE), np.float32)]
    return np.concatenate(pieces[:-1])


def speech_test_limit() -> int:
    """The most speech test examples there are: half numbers (100), half real-voice test sums (82)."""
    return 2 * min(MAX_SPOKEN_NUMBER + 1, len(arithmetic_triples("test")))


def _arithmetic_text(a: int, op: str, b: int, lead: bool) -> str:
    return ("what is " if lead else "") + f"{number_to_words(a)} {op} {number_to_words(b)}"


def speech_examples(split: str, n: int, seed: int = 0) -> list[Example]:
    """Questions answered from the speech alone: half sums, half numbers said alone. Train and
    validation are espeak-ng; test is the real Asterisk voice (see the module docstring)."""
    _check(split, n, seed)
    rng = _rng(split, "speech", seed)
    kinds = _balanced(["arithmetic", "number"], n, rng)
    triples = arithmetic_triples(split)
    wanted = {kind: kinds.count(kind) for kind in ("number", "arithmetic")}
    if split == "test":  # real voice: each number and sum at most once
        if wanted["number"] > MAX_SPOKEN_NUMBER + 1 or wanted["arithmetic"] > len(triples):
            raise ValueError(f"the real-voice speech test set holds {MAX_SPOKEN_NUMBER + 1} numbers and "
                             f"{len(triples)} sums; n={n} asks for {wanted['number']} and {wanted['arithmetic']}")
        numbers, sums = iter(rng.permutation(MAX_SPOKEN_NUMBER + 1)), iter(rng.permutation(len(triples)))
    else:  # synthetic voices: texts repeat, each time in another voice
        numbers, sums = iter(rng.integers(MAX_SPOKEN_NUMBER + 1, size=n)), iter(rng.integers(len(triples), size=n))
    items = []  # (kind, text, answer)
    for kind in kinds:
        if kind == "number":
            words = number_to_words(int(next(numbers)))
            items.append((kind, words, words))
        else:
            a, op, b, result = triples[int(next(sums))]
            lead = split != "test" and bool(rng.random() < 0.5)  # Asterisk has no "what is"
            items.append((kind, _arithmetic_text(a, op, b, lead), number_to_words(result)))
    prompts = {"arithmetic": ARITHMETIC_PROMPT, "number": NUMBER_PROMPT}
    if split == "test":
        return [Example("speech", kind, text, prompts[kind], answer, audio=asterisk_phrase(text),
                        source="asterisk:" + "+".join(text.split()), info={"speaker": "Allison"})
                for kind, text, answer in items]
    plan = [(text, "espeak", speech_data.draw_params(rng)) for _, text, _ in items]
    return [Example("speech", kind, text, prompts[kind], answer, audio=audio, source="espeak",
                    info=dict(params.__dict__))
            for (kind, text, answer), audio, (_, _, params) in zip(items, _spoken_audio(plan), plan)]


# -- video: moving shapes --------------------------------------------------------------------------
def _video_question(kind: str, shapes: list[moving_shapes.MovingShape]) -> tuple[str, str]:
    target = shapes[0]
    if kind == "direction":
        what = "the shape" if len(shapes) == 1 else f"the {target.color} {target.shape}"
        return f"which direction does {what} move?", target.direction
    if kind == "color":
        what = "the shape" if len(shapes) == 1 else f"the {target.shape}"
        return f"what color is {what}?", target.color
    if len(shapes) == 1:
        return "which shape appears?", target.shape
    return f"which shape moves {target.direction}?", target.shape


def video_examples(split: str, n: int, seed: int = 0, frames: int = VIDEO_FRAMES, size: int = VIDEO_SIZE,
                   fps: float = VIDEO_FPS) -> list[Example]:
    """Moving-shape clips asked about the direction, colour or kind of a shape (a third each); the
    question is about shapes[0] of `info["shapes"]`."""
    _check(split, n, seed)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    rng = _rng(split, "video", seed)
    examples = []
    for kind, num_shapes in zip(_balanced(["direction", "color", "shape"], n, rng), _balanced([1, 2], n, rng)):
        video, shapes = moving_shapes.random_clip(rng, frames, size, num_shapes)
        question, answer = _video_question(kind, shapes)
        examples.append(Example("video", kind, question, question, answer, video=video, fps=float(fps),
                                source="moving_shapes", info={"shapes": [s.__dict__ for s in shapes]}))
    return examples


# -- audio: DTMF keys and beeps --------------------------------------------------------------------
_AUDIO_QUESTIONS = {
    "dtmf keys": "which keys are pressed?", "dtmf count": "how many keys are pressed?",
    "beep count": "how many beeps are there?", "beep pitch": "is the beep high or low?",
}


def _tones(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, str, dict]:
    """(clean signal, answer, info) of one audio question."""
    if kind.startswith("dtmf"):
        keys = [str(k) for k in rng.choice(tone_audio.PHONE_KEYS, int(rng.integers(1, 5)))]
        tone_s, gap_s = rng.uniform(0.08, 0.2, len(keys)), rng.uniform(0.06, 0.16, len(keys) - 1)
        answer = " ".join(KEY_WORDS[k] for k in keys) if kind == "dtmf keys" else number_to_words(len(keys))
        return tone_audio.dtmf(keys, tone_s, gap_s), answer, {"keys": "".join(keys)}
    if kind == "beep count":
        count, frequency = int(rng.integers(1, 7)), float(rng.uniform(300, 3000))
        answer = number_to_words(count)
    else:
        high = bool(rng.random() < 0.5)
        count, frequency = int(rng.integers(1, 4)), float(rng.uniform(*((1500, 3000) if high else (250, 500))))
        answer = "high" if high else "low"
    audio = tone_audio.beeps(count, frequency, float(rng.uniform(0.1, 0.25)), float(rng.uniform(0.1, 0.3)))
    return audio, answer, {"beeps": count, "frequency": round(frequency, 1)}


def audio_examples(split: str, n: int, seed: int = 0) -> list[Example]:
    """DTMF and beep questions (a quarter each kind), in noise; answers are words ("one five pound")."""
    _check(split, n, seed)
    rng = _rng(split, "audio", seed)
    examples = []
    for kind in _balanced(list(_AUDIO_QUESTIONS), n, rng):
        clean, answer, info = _tones(kind, rng)
        audio = tone_audio.place(clean / np.abs(clean).max(), rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5))
        snr_db = AUDIO_SNRS_DB[int(rng.integers(len(AUDIO_SNRS_DB)))]
        noise_kind = str(rng.choice(speech_data.NOISE_KINDS))
        if snr_db is not None:
            audio = speech_data.add_noise(audio, snr_db, noise_kind, rng)
        audio = (audio * (rng.uniform(*speech_data.GAIN_RANGE) / np.abs(audio).max())).astype(np.float32)
        examples.append(Example("audio", kind, _AUDIO_QUESTIONS[kind], _AUDIO_QUESTIONS[kind], answer, audio=audio,
                                source="tone_audio", info={**info, "snr_db": snr_db, "noise_kind": noise_kind}))
    return examples


# -- all of them -----------------------------------------------------------------------------------
BUILDERS = {"image": image_examples, "speech+image": spoken_image_examples, "speech": speech_examples,
            "video": video_examples, "audio": audio_examples}


def mixed_examples(split: str, n_per_modality: int | dict[str, int], seed: int = 0,
                   modalities=MODALITIES) -> list[Example]:
    """Every modality's examples of `split`, grouped in MODALITIES order (shuffle them to train).

    `n_per_modality` is one count for all, or a dict modality -> count (a missing modality is left out)."""
    unknown = [m for m in modalities if m not in BUILDERS]
    if isinstance(n_per_modality, dict):
        unknown += [m for m in n_per_modality if m not in BUILDERS]
        counts = {m: n_per_modality[m] for m in MODALITIES if m in n_per_modality and m in modalities}
    else:
        counts = {m: n_per_modality for m in MODALITIES if m in modalities}
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
    return [e for modality, n in counts.items() for e in BUILDERS[modality](split, n, seed)]


def _report(n: int, seed: int) -> None:
    import time

    train = None
    for split in SPLITS:
        start = time.perf_counter()
        examples = mixed_examples(split, min(n, speech_test_limit()) if split == "test" else n, seed)
        took = time.perf_counter() - start
        train = examples if split == "train" else train
        own, from_train = majority_baseline(examples), majority_baseline(examples, train)
        print(f"{split}: {len(examples)} examples in {took:.1f} s")
        for modality in MODALITIES:
            chosen = [e for e in examples if e.modality == modality]
            print(f"  {modality:13s} n={len(chosen):4d}  distinct answers={len({e.answer for e in chosen}):4d}  "
                  f"majority (own)={own[modality]:.3f}  majority (train's)={from_train[modality]:.3f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the Uni-MoE mixed data; print sizes and majority baselines.")
    parser.add_argument("--n", type=int, default=400,
                        help="examples per modality (the test split stops at speech_test_limit(), 164)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _report(args.n, args.seed)
