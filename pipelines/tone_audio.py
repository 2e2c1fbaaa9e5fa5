"""Non-speech audio whose content is known exactly: DTMF key sequences and beep patterns, for the audio
modality of the Uni-MoE mixed instruction data (pipelines.unimoe_data).

    dtmf(["1", "#"], tone_s, gap_s)      low-group + high-group sine per key, silence between keys
    beeps(count, frequency, beep_s, gap_s)   `count` sine bursts of one frequency
        --place(audio, lead_s, total_s)-->   silence before and after
        --speech_data.add_noise (white/pink at an SNR), gain-->   float32 at 16 kHz

DTMF follows ITU-T Q.23: each key is the sum of one row tone (697, 770, 852, 941 Hz) and one column
tone (1209, 1336, 1477, 1633 Hz) at equal level; Q.24 asks receivers to accept tones of 40 ms or more
separated by 40 ms or more, so the durations used here (80-200 ms tones, 60-160 ms gaps) are ones a
real decoder takes. Keys A-D (the fourth column) exist on the keypad table but no question uses them,
since a phone has none. Every tone has 5 ms raised-cosine ramps at both ends, so no click spreads
energy across the spectrum and a Goertzel/FFT decoder sees clean peaks.
"""
from __future__ import annotations

import numpy as np

SAMPLING_RATE = 16000
ROW_HZ = (697, 770, 852, 941)
COLUMN_HZ = (1209, 1336, 1477, 1633)
KEYPAD = ("123A", "456B", "789C", "*0#D")
PHONE_KEYS = tuple("0123456789*#")
RAMP_S = 0.005


def dtmf_frequencies(key: str) -> tuple[int, int]:
    """(row Hz, column Hz) of a keypad key: "5" -> (770, 1336)."""
    for row, keys in enumerate(KEYPAD):
        if isinstance(key, str) and len(key) == 1 and key in keys:
            return ROW_HZ[row], COLUMN_HZ[keys.index(key)]
    raise ValueError(f"DTMF key must be one of {''.join(''.join(KEYPAD))!r}, got {key!r}")


def tone(frequencies, seconds: float, rate: int = SAMPLING_RATE) -> np.ndarray:
    """Sum of unit-amplitude sines (float32, peak <= len(frequencies)) with raised-cosine ramps."""
    n = round(seconds * rate)
    ramp = round(RAMP_S * rate)
    if n < 2 * ramp + 1:
        raise ValueError(f"a tone must last more than {2 * RAMP_S * 1000:.0f} ms, got {seconds * 1000:.1f} ms")
    t = np.arange(n) / rate
    out = sum(np.sin(2 * np.pi * f * t) for f in frequencies)
    envelope = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[:ramp], envelope[n - ramp:] = edge, edge[::-1]
    return (out * envelope).astype(np.float32)


def _sequence(pieces: list[np.ndarray], gaps: list[float], rate: int) -> np.ndarray:
    out = [pieces[0]]
    for piece, gap in zip(pieces[1:], gaps):
        out += [np.zeros(round(gap * rate), np.float32), piece]
    return np.concatenate(out)


def dtmf(keys, tone_s, gap_s, rate: int = SAMPLING_RATE) -> np.ndarray:
    """The keys pressed one after the other. `tone_s` is one duration per key, `gap_s` one per gap
    (len(keys) - 1); both in seconds. Peak <= 1 (each of the two sines at amplitude 0.5)."""
    keys = list(keys)
    if not keys or len(tone_s) != len(keys) or len(gap_s) != len(keys) - 1:
        raise ValueError(f"dtmf: need >= 1 key, one tone duration per key and one gap between keys; got "
                         f"{len(keys)} keys, {len(tone_s)} tones, {len(gap_s)} gaps")
    return _sequence([0.5 * tone(dtmf_frequencies(k), s, rate) for k, s in zip(keys, tone_s)], list(gap_s), rate)


def beeps(count: int, frequency: float, beep_s: float, gap_s: float, rate: int = SAMPLING_RATE) -> np.ndarray:
    """`count` equal beeps of one sine (peak 1) separated by `gap_s` seconds of silence."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"beeps: count must be a positive int, got {count!r}")
    return _sequence([tone([frequency], beep_s, rate)] * count, [gap_s] * (count - 1), rate)


def place(audio: np.ndarray, lead_s: float, tail_s: float, rate: int = SAMPLING_RATE) -> np.ndarray:
    """`audio` with `lead_s` seconds of silence before it and `tail_s` after (so onsets vary)."""
    return np.concatenate([np.zeros(round(lead_s * rate), np.float32), audio,
                           np.zeros(round(tail_s * rate), np.float32)])
