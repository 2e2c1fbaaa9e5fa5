"""Real speech data for the tiny speech-recognition runs (MoME): synthetic training speech from real
text, and two held-out sets of human speech that are never trained on.

    synthetic_speech(split, n=None, seed=0) -> list[SpeechSample]   split: "train" | "validation"
    asterisk_prompts()                      -> list[SpeechSample]   551 studio prompts (asterisk-core-sounds-en-wav)
    pyannote_utterances()                   -> list[SpeechSample]   13 telephone utterances (pyannote-audio's sample)

Every `SpeechSample` holds `audio` (float32 [n], mono), `sampling_rate` (16000), `text`, `source`
(where the text/recording came from) and `info` (how it was made). Score hypotheses with
`zoo.pipelines.speech_metrics.wer`; its `normalize_text` lower-cases and drops punctuation but keeps
digits, so every transcript here already has its numbers spelled out (`spell_numbers`): "Press 1" is
"Press one", like the training texts, and a model trained on them is not charged for "1" vs "one".

Training speech (`synthetic_speech`)
    Text: WordNet glosses and their quoted examples (Debian `wordnet-base`, /usr/share/wordnet/data.*)
    and sentences of the fortune files (Debian `fortunes-min`), kept when they are plain sentences of
    3-12 words, in `spoken_text` form (numbers as words, then `normalize_text`: lower case, no
    punctuation); `text` is exactly what espeak-ng is asked to say. About 124k train and 6.5k
    validation texts; the two splits are disjoint (a hash of the text picks the split, 5 %
    validation), and no training text equals a held-out transcript (checked whenever the pool is
    loaded; it raises otherwise). The pool is cached too (building it parses WordNet, ~15 s).
    Audio: espeak-ng with 8 English accents x 20 voice variants (10 male, 10 female), speed 130-190
    words/min, pitch 30-75; 30 % of it band-limited to telephone speech (through 8 kHz, like both
    held-out sets), then white or pink noise at an SNR of 30, 20 or 15 dB (a quarter stays clean),
    then a gain (peak 0.3-0.9); all drawn from `seed`. SNR = 10 log10(sum speech^2 / sum noise^2)
    over the whole utterance. Stored as 16-bit PCM, so `audio` is a multiple of 1/32768. Utterances
    last 0.9-7 s (mean 2.7 s). `info` holds the UtteranceParams of each sample.
    Speed: 25-40 utterances/s with 3 espeak-ng subprocesses on the 2 shared cores (load average 6-8
    from other jobs; ~20/s with one). DEFAULT_SIZES (2000 train = 1.5 h of audio, 100 validation)
    build cold in 66 s at load 6 (124 s at load 11), including the ~15 s text pool; the recipe's
    Whisper-encoder feature caching, not the synthesis, limits the size (see DEFAULT_SIZES). Cached under
    `zoo.integrations.assets.cache_dir()/speech/`, keyed by split, n, seed, the generator version,
    the voice/noise tables, the espeak-ng version and the source files; a second call reads the
    cache (~2 s for 2000 utterances); a damaged (checksum) or partial cache entry is rebuilt.

Held-out sets (never trained on; read from the installed packages each time, ~1.5 s)
    `asterisk_prompts`: the 568 wavs of /usr/share/asterisk/sounds/en_US_f_Allison/ (8 kHz, resampled
    to 16 kHz) with their transcripts from core-sounds-en.txt.gz (Debian `asterisk-core-sounds-en`).
    All 568 wavs have an entry there (the documentation has one more, `pls-try-call-later`, a
    duplicate of `please-try-call-later` with no recording of its own); 17 entries are not speech
    (tones, beeps, monkeys, silences: "[...]", "<...>", "(N seconds of silence)") and are left out,
    leaving 551. Inline notes are removed ("at [@]" -> "at", "IAX (note: does not say "2")" ->
    "IAX"), "*" and "#" are read as "star" and "pound", and seven spelling slips of the documentation
    are fixed (`_DOC_TYPOS`). Caveats: demo-instruct says numbers (500, 1234, 28.8) whose spoken form
    may differ from the cardinal words used here, and "H.323" becomes "H. three two three"; 23
    prompts are longer than 8 s and 3 longer than 30 s (Whisper's window).
    `pyannote_utterances`: sample.wav cut at the 13 timed utterances of sample.stm (16 kHz telephone
    conversation, 2 speakers). pyannote.audio is located with find_spec, never imported.
    For scale, packaged Whisper tiny.en (zero-shot, 30 s window) scored WER 0.08 on 32 random
    Asterisk prompts, 0.31 on the 13 pyannote utterances and ~0.2 on clean wideband espeak speech.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import resample_poly

from zoo.integrations.assets import cache_dir
from zoo.pipelines.speech_metrics import normalize_text

SAMPLING_RATE = 16000
SPLITS = ("train", "validation")
# Sized for a MoME speech recipe that must fit 20 minutes on 2 shared cores *including* this synthesis
# (~1.5 min cold) and Whisper tiny.en feature caching, which costs far more per utterance: measured here
# (load 7) ~1 s per utterance for the full 30 s window and ~0.25 s for an 8 s window (bf16), so 2000
# utterances already need ~8 min of encoder time at best unless the window is cut to the utterance.
DEFAULT_SIZES = {"train": 2000, "validation": 100}
MIN_WORDS, MAX_WORDS = 3, 12
VALIDATION_PERCENT = 5

# espeak-ng voices: accent x variant. Unknown variants fall back silently to the plain voice, so
# tests check that each of these changes the audio.
ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "Andy", "john", "klatt")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "aunty", "belinda", "linda", "steph")
SPEEDS = (130, 150, 170, 190)  # words per minute (espeak-ng default 175)
PITCHES = (30, 45, 60, 75)  # 0-99 (default 50)
SNRS_DB = (None, 30.0, 20.0, 15.0)  # None = clean. At 10 dB Whisper tiny.en already fails on espeak speech
NOISE_KINDS = ("white", "pink")
TELEPHONE_PROBABILITY = 0.3  # espeak through 8 kHz is hard for Whisper tiny.en (WER 0.2 -> 0.6)
GAIN_RANGE = (0.3, 0.9)  # peak level of the clean speech

GENERATOR_VERSION = 1  # bump when rendering or text selection changes: old cache entries are ignored

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_DOC_GLOB = "/usr/share/doc/asterisk-core-sounds-en*/core-sounds-en.txt.gz"


@dataclass(frozen=True, eq=False)
class SpeechSample:
    """One utterance: mono float32 audio at `sampling_rate` and its transcript."""

    audio: np.ndarray
    sampling_rate: int
    text: str
    source: str
    info: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sampling_rate


@dataclass(frozen=True)
class UtteranceParams:
    """Everything `render` needs to make one synthetic utterance (deterministic given these)."""

    accent: str
    variant: str
    speed: int
    pitch: int
    telephone: bool
    snr_db: float | None
    noise_kind: str
    noise_seed: int
    gain: float

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


# -- numbers as words (speech_metrics.normalize_text keeps digits, so texts are spelled out here) ---
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_IRREGULAR_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                       "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """Cardinal English words without "and": 105 -> "one hundred five", 1234 -> "one thousand two hundred
    thirty four"."""
    if not 0 <= n < 10**15:
        raise ValueError(f"number_to_words: n must be in 0..10**15-1, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    scale, name = next((s, w) for s, w in _SCALES if n >= s)
    high, rest = divmod(n, scale)
    return number_to_words(high) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))


def ordinal_words(n: int) -> str:
    """Ordinal English words: 21 -> "twenty first", 40 -> "fortieth"."""
    *head, last = number_to_words(n).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    else:
        last = last[:-1] + "ieth" if last.endswith("y") else last + "th"
    return " ".join(head + [last])


def _number_words(match: re.Match) -> str:
    integer, fraction, suffix = match.group(1).replace(",", ""), match.group(2), match.group(3)
    if len(integer) > 15:  # an id or a phone number: digit by digit
        words = " ".join(_ONES[int(d)] for d in integer)
    else:
        words = ordinal_words(int(integer)) if suffix else number_to_words(int(integer))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {words} "


# 1,234 / 28.8 / 21st: thousands separators only in groups of three
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?!\w)", re.IGNORECASE)


def spell_numbers(text: str) -> str:
    """Numerals, "&" and "%" as words; the rest of the text is left as it is.

    "Press 1 or dial 28.8." -> "Press one or dial twenty eight point eight."; "21st" -> "twenty first".
    """
    text = text.replace("&", " and ").replace("%", " percent ")
    text = _NUMBER.sub(_number_words, text)
    text = re.sub(r"\d", lambda m: f" {_ONES[int(m.group())]} ", text)  # digits left inside words
    return re.sub(r"[ \t]+", " ", text).strip().replace(" .", ".").replace(" ,", ",")


def spoken_text(text: str) -> str:
    """The form every transcript is compared and trained in: numbers spelled out, then normalize_text."""
    return normalize_text(spell_numbers(text))


def _require(path: Path | None, what: str, install: str) -> Path:
    if path is None or not path.exists():
        raise FileNotFoundError(f"{what} not found ({path}); install it: {install} (scripts/install.sh)")
    return path


# -- held-out test sets ---------------------------------------------------------------------------
_NON_SPEECH = re.compile(r"^\s*(\[[^\]]*\]|<[^>]*>|\(\s*\d+\s+seconds?\s+of\s+silence\s*\))\s*$", re.IGNORECASE)
_DOC_TYPOS = {  # spelling slips of core-sounds-en.txt (the recordings say the real word)
    "exclaimation": "exclamation", "fourtieth": "fortieth", "umute": "unmute", "represenatives": "representatives",
    "indentified": "identified", "witheld": "withheld", "thru": "through",
}


def asterisk_doc_path() -> Path:
    found = sorted(Path("/").glob(ASTERISK_DOC_GLOB.lstrip("/")))
    return _require(found[0] if found else None, "core-sounds-en.txt.gz", "apt-get install asterisk-core-sounds-en-wav")


def asterisk_transcripts() -> tuple[dict[str, str], dict[str, str]]:
    """(speech, non_speech): prompt name ("digits/5") -> cleaned transcript / raw description."""
    speech, non_speech = {}, {}
    with gzip.open(asterisk_doc_path(), "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, text = line.partition(":")
            if not sep:
                raise ValueError(f"core-sounds-en.txt: line without 'name: text': {line!r}")
            name, text = name.strip(), text.strip()
            if _NON_SPEECH.match(text):
                non_speech[name] = text
                continue
            text = re.sub(r"\[[^\]]*\]", " ", text)  # "at [@]" -> "at"
            text = re.sub(r"\([^)]*\)", " ", text)  # "(note: ...)", "(simple tone sound plays)"
            text = text.replace("*", " star ").replace("#", " pound ")
            for wrong, right in _DOC_TYPOS.items():
                text = re.sub(rf"\b{wrong}\b", right, text)
            text = spell_numbers(re.sub(r"\s+", " ", text).strip())
            if not spoken_text(text):
                raise ValueError(f"core-sounds-en.txt: {name} has no words left after cleaning: {line!r}")
            speech[name] = text
    return speech, non_speech


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1).astype(np.float32), rate


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLING_RATE:
        return audio.astype(np.float32)
    g = np.gcd(rate, SAMPLING_RATE)
    return resample_poly(audio, SAMPLING_RATE // g, rate // g).astype(np.float32)


def asterisk_prompts() -> list[SpeechSample]:
    """The Asterisk "Allison" prompts that are speech, with their documented transcripts, at 16 kHz."""
    root = _require(ASTERISK_SOUNDS, "Asterisk English prompts", "apt-get install asterisk-core-sounds-en-wav")
    speech, non_speech = asterisk_transcripts()
    samples = []
    for wav in sorted(root.rglob("*.wav")):
        name = wav.relative_to(root).with_suffix("").as_posix()
        if name in non_speech:
            continue
        if name not in speech:
            raise ValueError(f"asterisk prompt {name}.wav has no transcript in {asterisk_doc_path()}")
        audio, rate = _read_mono(wav)
        samples.append(
            SpeechSample(_to_16k(audio, rate), SAMPLING_RATE, speech[name], f"asterisk:{name}",
                         {"file": str(wav), "original_sampling_rate": rate, "speaker": "Allison"})
        )
    return samples


def pyannote_sample_dir() -> Path:
    spec = importlib.util.find_spec("pyannote.audio")  # locates the package without importing it
    folder = Path(spec.submodule_search_locations[0]) / "sample" if spec and spec.submodule_search_locations else None
    return _require(folder, "pyannote-audio's sample folder", "pip install --no-deps pyannote-audio==4.0.7")


def pyannote_transcripts() -> list[tuple[str, float, float, str]]:
    """(speaker, start s, end s, text) of each line of sample.stm."""
    rows = []
    for line in (pyannote_sample_dir() / "sample.stm").read_text().splitlines():
        if not line.strip():
            continue
        _file, _channel, speaker, start, end, text = line.split(maxsplit=5)
        rows.append((speaker, float(start), float(end), text.strip()))
    return rows


def pyannote_utterances() -> list[SpeechSample]:
    """The 13 utterances of pyannote's 2-speaker telephone sample, cut at the .stm times."""
    audio, rate = _read_mono(pyannote_sample_dir() / "sample.wav")
    audio = _to_16k(audio, rate)
    samples = []
    for speaker, start, end, text in pyannote_transcripts():
        a, b = round(start * SAMPLING_RATE), round(end * SAMPLING_RATE)
        if not 0 <= a < b <= len(audio):
            raise ValueError(f"sample.stm: utterance {start}-{end} s lies outside sample.wav "
                             f"({len(audio) / SAMPLING_RATE:.2f} s)")
        samples.append(
            SpeechSample(audio[a:b].copy(), SAMPLING_RATE, text, f"pyannote:sample:{speaker}:{start:.3f}-{end:.3f}",
                         {"speaker": speaker, "start": start, "end": end})
        )
    return samples


def held_out_transcripts() -> set[str]:
    """Normalised transcripts of both held-out sets (what no training text may equal)."""
    texts = set(asterisk_transcripts()[0].values()) | {row[3] for row in pyannote_transcripts()}
    return {spoken_text(t) for t in texts}


# -- training text --------------------------------------------------------------------------------
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,'?!:-]+[.?!]?$")  # plain words; a full stop only at the end
_MIXED = re.compile(r"\b(?=\w*[A-Za-z])(?=\w*\d)\w+\b")  # "3D", "mp3": not plain words


def _clean_sentence(text: str) -> str | None:
    text = re.sub(r"\s+", " ", text).strip().strip('"').strip()
    if not text or not _ALLOWED.match(text) or _MIXED.search(re.sub(r"\d+(st|nd|rd|th)\b", "0", text)):
        return None
    if re.search(r"(^|\s)['-]|['-]($|\s)|--", text):  # quotes used as brackets, dashes as pauses
        return None
    normal = spoken_text(text)
    return normal if MIN_WORDS <= len(normal.split()) <= MAX_WORDS else None


def _wordnet_texts() -> list[tuple[str, str]]:
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = _require(WORDNET_DIR / f"data.{pos}", "WordNet data", "apt-get install wordnet-base")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # license header
                    continue
                offset = line.split(" ", 1)[0]
                for piece in line.split(" | ", 1)[1].split(";"):
                    text = _clean_sentence(piece)
                    if text:
                        out.append((text, f"wordnet:{pos}:{offset}"))
    return out


def _fortune_texts() -> list[tuple[str, str]]:
    out = []
    for name in ("fortunes", "literature", "riddles"):
        path = _require(FORTUNES_DIR / name, "fortune files", "apt-get install fortunes-min")
        for k, record in enumerate(re.split(r"^%\s*$", path.read_text(encoding="utf-8", errors="replace"), flags=re.M)):
            body = " ".join(line.strip() for line in record.splitlines() if not line.strip().startswith("--"))
            for sentence in re.split(r"(?<=[.!?])\s+", body):
                text = _clean_sentence(sentence)
                if text:
                    out.append((text, f"fortunes:{name}:{k}"))
    return out


def _split_of(text: str) -> str:
    bucket = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def _text_pool_key(excluded: set[str]) -> str:
    key = json.dumps({"version": GENERATOR_VERSION, "sources": _source_fingerprint(), "excluded": sorted(excluded),
                      "words": [MIN_WORDS, MAX_WORDS, VALIDATION_PERCENT]}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _build_text_pools(excluded: set[str]) -> dict[str, list[tuple[str, str]]]:
    seen, pools = set(), {s: [] for s in SPLITS}
    for text, source in _wordnet_texts() + _fortune_texts():
        if text in seen or text in excluded:
            continue
        seen.add(text)
        pools[_split_of(text)].append((text, source))
    return pools


@lru_cache(maxsize=1)
def _text_pools() -> dict[str, tuple[tuple[str, str], ...]]:
    """Both splits' texts; parsing WordNet takes ~12 s, so the result is cached on disk too."""
    excluded = held_out_transcripts()
    path = cache_dir() / "speech" / f"texts-{_text_pool_key(excluded)}.json"
    try:
        pools = {s: [tuple(item) for item in p] for s, p in json.loads(path.read_text()).items()}
        if sorted(pools) != sorted(SPLITS) or not all(len(i) == 2 for p in pools.values() for i in p):
            raise ValueError("malformed text cache")
    except (OSError, ValueError, AttributeError, TypeError):
        pools = _build_text_pools(excluded)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(pools))
        os.replace(tmp, path)
    overlap = excluded & {t for pool in pools.values() for t, _ in pool}
    assert not overlap, f"training texts equal test transcripts: {sorted(overlap)[:5]}"
    if overlap:  # also under python -O
        raise RuntimeError(f"training texts equal test transcripts: {sorted(overlap)[:5]}")
    return {s: tuple(p) for s, p in pools.items()}


def training_texts(split: str) -> list[tuple[str, str]]:
    """All (normalised text, source) pairs of a split, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return list(_text_pools()[split])


# -- rendering ------------------------------------------------------------------------------------
def espeak_version() -> str:
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng not found; install it: apt-get install espeak-ng (scripts/install.sh)")
    return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def espeak(text: str, voice: str, speed: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Raw espeak-ng output (float32 mono, its native rate, 22050 Hz)."""
    result = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"],
        input=text.encode(), capture_output=True, check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed on {text!r} (voice {voice}): {result.stderr.decode(errors='replace')}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return audio, rate


def noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white or pink (1/f power) noise."""
    if kind == "white":
        out = rng.standard_normal(length)
    elif kind == "pink":  # white noise shaped by 1/sqrt(f) in the frequency domain
        size = next_fast_len(length, real=True)
        spectrum = rfft(rng.standard_normal(size))
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = 1.0
        out = irfft(spectrum / np.sqrt(freqs), n=size)[:length]
    else:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    return (out / np.sqrt(np.mean(out**2))).astype(np.float32)


def add_noise(speech: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """speech + noise scaled so that 10 log10(sum speech^2 / sum noise^2) == snr_db."""
    power = float(np.mean(speech.astype(np.float64) ** 2))
    if power == 0.0:
        raise ValueError("add_noise: the speech is silent; SNR is undefined")
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (speech + scale * noise(kind, len(speech), rng)).astype(np.float32)


def render(text: str, params: UtteranceParams) -> np.ndarray:
    """One synthetic utterance at 16 kHz, float32, on the 16-bit grid (what the cache stores)."""
    audio, rate = espeak(text, params.voice, params.speed, params.pitch)
    audio = _to_16k(audio, rate)
    if params.telephone:  # through an 8 kHz channel: nothing above 4 kHz, like both test sets
        audio = resample_poly(resample_poly(audio, 1, 2), 2, 1)[: len(audio)].astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r} (voice {params.voice})")
    audio = audio / peak
    if params.snr_db is not None:
        audio = add_noise(audio, params.snr_db, params.noise_kind, np.random.default_rng(params.noise_seed))
    audio = audio * params.gain
    peak = float(np.max(np.abs(audio)))
    if peak > 32767 / 32768:  # loud noise: scale down rather than clip (keeps the SNR)
        audio = audio * (32767 / 32768 / peak)
    return _quantize(audio)


def _quantize(audio: np.ndarray) -> np.ndarray:
    return (np.round(np.asarray(audio, np.float64) * 32768).clip(-32768, 32767) / 32768).astype(np.float32)


def draw_params(rng: np.random.Generator) -> UtteranceParams:
    female = rng.random() < 0.5
    variants = FEMALE_VARIANTS if female else MALE_VARIANTS
    return UtteranceParams(
        accent=str(rng.choice(ACCENTS)),
        variant=str(rng.choice(variants)),
        speed=int(rng.choice(SPEEDS)),
        pitch=int(rng.choice(PITCHES)),
        telephone=bool(rng.random() < TELEPHONE_PROBABILITY),
        snr_db=SNRS_DB[int(rng.integers(len(SNRS_DB)))],
        noise_kind=str(rng.choice(NOISE_KINDS)),
        noise_seed=int(rng.integers(2**31)),
        gain=round(float(rng.uniform(*GAIN_RANGE)), 4),
    )


def synthesis_plan(split: str, n: int, seed: int = 0) -> list[tuple[str, str, UtteranceParams]]:
    """(text, source, params) of each utterance: n distinct texts of the split, drawn with `seed`."""
    pool = training_texts(split)
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be in 1..{len(pool)} for split {split!r} (texts available), got {n}")
    rng = np.random.default_rng([seed, SPLITS.index(split), GENERATOR_VERSION])
    picks = rng.permutation(len(pool))[:n]
    return [(pool[i][0], pool[i][1], draw_params(rng)) for i in picks]


def render_many(plan, workers: int | None = None) -> list[np.ndarray]:
    """Render a plan with `workers` espeak-ng subprocesses running at once (default: CPU count + 1)."""
    workers = workers or (os.cpu_count() or 1) + 1  # one extra: Python post-processing overlaps espeak-ng
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on espeak-ng processes
        return list(pool.map(lambda item: render(item[0], item[2]), plan))


# -- cache ----------------------------------------------------------------------------------------
def _source_fingerprint() -> list:
    files = [WORDNET_DIR / f"data.{p}" for p in ("noun", "verb", "adj", "adv")]
    files += [FORTUNES_DIR / n for n in ("fortunes", "literature", "riddles")]
    files += [asterisk_doc_path(), pyannote_sample_dir() / "sample.stm"]
    return [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]


def speech_cache_path(split: str, n: int, seed: int) -> Path:
    key = json.dumps(
        {"version": GENERATOR_VERSION, "split": split, "n": n, "seed": seed, "espeak": espeak_version(),
         "texts": _text_pool_key(held_out_transcripts()),  # the sources, the word limits, the held-out texts
         "params": [ACCENTS, MALE_VARIANTS, FEMALE_VARIANTS, SPEEDS, PITCHES, SNRS_DB, NOISE_KINDS,
                    TELEPHONE_PROBABILITY, GAIN_RANGE]},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "speech" / f"{split}-n{n}-seed{seed}-{digest}"


def write_cache(folder: Path, plan, audios: list[np.ndarray]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    pcm = np.round(np.concatenate(audios) * 32768).astype(np.int16)
    offsets = np.cumsum([0] + [len(a) for a in audios]).astype(np.int64)
    np.save(tmp / "audio.npy", pcm)
    np.save(tmp / "offsets.npy", offsets)
    meta = {
        "texts": [t for t, _, _ in plan], "sources": [s for _, s, _ in plan],
        "params": [p.__dict__ for _, _, p in plan], "crc32": zlib.crc32(memoryview(pcm).cast("B")),
    }
    (tmp / "meta.json").write_text(json.dumps(meta))  # the folder counts only once renamed into place
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process put its (identical) entry in place first
        shutil.rmtree(tmp, ignore_errors=True)


def read_cache(folder: Path, n: int) -> list[SpeechSample] | None:
    """The cached samples, or None when the entry is missing or damaged in any way."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        pcm = np.load(folder / "audio.npy", allow_pickle=False)
        offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        ok = (
            pcm.dtype == np.int16 and pcm.ndim == 1 and offsets.shape == (n + 1,) and offsets[0] == 0
            and offsets[-1] == len(pcm) and bool(np.all(np.diff(offsets) > 0))
            and len(meta["texts"]) == len(meta["sources"]) == len(meta["params"]) == n
            and zlib.crc32(memoryview(pcm).cast("B")) == meta["crc32"]
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if not ok:
        return None
    audio = np.multiply(pcm, np.float32(1 / 32768), dtype=np.float32)  # one pass, exact
    return [
        SpeechSample(audio[offsets[i]:offsets[i + 1]], SAMPLING_RATE, meta["texts"][i], meta["sources"][i],
                     dict(meta["params"][i]))
        for i in range(n)
    ]


def synthetic_speech(split: str, n: int | None = None, seed: int = 0, workers: int | None = None) -> list[SpeechSample]:
    """n synthetic utterances of `split` ("train" or "validation"; n defaults to DEFAULT_SIZES[split]).

    Cached: the first call synthesises (about 60 utterances/s here) and writes the cache; later
    calls with the same arguments read it. `info` of each sample holds its UtteranceParams.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = DEFAULT_SIZES[split] if n is None else n
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    folder = speech_cache_path(split, n, seed)
    cached = read_cache(folder, n)
    if cached is not None:
        return cached
    plan = synthesis_plan(split, n, seed)
    write_cache(folder, plan, render_many(plan, workers))
    samples = read_cache(folder, n)
    if samples is None:
        raise RuntimeError(f"speech cache at {folder} could not be read back after writing it")
    return samples
