"""Whisper tiny.en as the audio tower: padded 30 s encoder (Whisper's own) vs trimmed to the clip.

  1. speed: one forward of the tower on 1 / 3 / 10 s of real speech, padded (3000 mel frames -> 1500
     positions) vs trimmed (only the clip's frames), median of repeats; prints padded / trimmed
  2. closeness on real frames: per-frame cosine similarity and relative L2 error of trimmed vs padded
     features, on 16 Asterisk prompts (0.7-25 s, transcripts from Debian's core-sounds-en.txt)
  3. Whisper's own decoder: greedy `generate` on the padded encoder output vs the same output with its
     real frames replaced by the trimmed features (the padding tail kept: the decoder needs it to stop);
     WER of each against the prompt's transcript

    python -m benchmarks.audio_encoder [--threads 1] [--repeats 5]
    (run under `flock /tmp/zoo-heavy.lock` on a shared machine)

Measured here (2 shared cores, busy machine, 1 thread), 2026-12-02:
    speed, padded / trimmed:  1 s 26.5x (1541 vs 58 ms)   3 s 12.7x (1504 vs 119 ms)   10 s 3.6x (1672 vs 466 ms)
    closeness on real frames (relative L2 error, mean per-frame cosine):
        clips under 2 s   0.30-0.66, 0.79-0.95      2.7-4.8 s   0.16-0.26, 0.96-0.99      7.8-25 s   0.10-0.15, 0.99
    decoder WER over the 16 prompts (281 words): padded 0.043, trimmed real frames 0.053. 3 of the 5
        clips under 2 s change for the worse ("Added." -> "I did.", "Parking attempt failed." -> "Parking
        attempt to failed.", "Message undeluted." -> "message and deleted."); of the 11 clips of 2.7 s
        and longer none gets worse (one gains a word, two differ in case/hyphen only).
So trimming is not free on short clips: the tower keeps Whisper's padding by default (trim=False);
trim=True is an opt-in for systems that train their connector on trimmed features.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")  # Debian asterisk-core-sounds-en-wav
TRANSCRIPTS = {  # from /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
    "hello-world": "Hello world.",
    "added": "Added.",
    "auth-thankyou": "Thank you.",
    "pbx-parkingfailed": "Parking attempt failed.",
    "vm-undeleted": "Message undeleted.",
    "something-terribly-wrong": "Something is terribly wrong!",
    "conf-noempty": "No empty conferences currently exist.",
    "vm-nobodyavail": "Nobody is available to take your call at the moment",
    "vm-mismatch": "The passwords you entered and re-entered did not match.  Please try again.",
    "confbridge-pin-bad": "You have entered too many invalid personal identification numbers.",
    "vm-rec-busy": "After the tone say your busy message and then press the pound key.",
    "queue-periodic-announce": "All of our represenatives are currently busy. Please stay on the line and your "
                               "call will be answered by the next available representative.",
    "demo-moreinfo": "Asterisk is an Open Source full-featured PBX and IVR platform that runs on the linux "
                     "operating system.  For more information, visit www.asterisk.org.",
    "demo-abouttotry": "I am about to attempt an Inter-Asterisk Exchange connection to a demonstration server "
                       "located at Digium.  In order for this to work, you must already be connected to the "
                       "internet.  Please wait a moment while I attempt to make the connection.",
    "demo-echotest": "You are about to enter an echo test.  In this mode everything you say will be repeated "
                     "back to you just as soon as it is received.  The purpose of this test is to give you an "
                     "audible sense of the latency between you and the machine that is running the echo test "
                     "application.  You may end the test by hanging up, or by pressing the pound key.",
    "basic-pbx-ivr-main": "Thank you for calling Super Awesome Company, Waldo's premier provider of perfect "
                          "products. If you know your party's extension, you may dial it at any time. To establish "
                          "a sales partnership, press one. To speak with a customer advocate, press two. For "
                          "accounting and other receivables, press three. For a company directory, press four. "
                          "For an operator, press zero.",
}


def features(processor, waveform: torch.Tensor):
    from zoo.multimodal.audio_tower import mel_frames

    mels = processor.feature_extractor(waveform.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    return mels, torch.tensor([mel_frames(waveform.numel())])


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers.modeling_outputs import BaseModelOutput

    from zoo.integrations.whisper_weights import load_whisper
    from zoo.multimodal.audio import load_audio
    from zoo.multimodal.audio_tower import WhisperAudioTower
    from zoo.pipelines.speech_metrics import normalize_text, wer

    model, processor = load_whisper("tiny.en", progress=False)
    padded = WhisperAudioTower(model.model.encoder, trim=False)
    trimmed = WhisperAudioTower(model.model.encoder, trim=True)

    print(f"== 1. tower forward, padded 30 s vs trimmed (median of {args.repeats}, {args.threads} thread(s))")
    speech = load_audio(PROMPTS / "demo-echotest.wav")  # 22 s of real speech
    with torch.no_grad():
        for seconds in (1, 3, 10):
            mels, lengths = features(processor, speech[: seconds * 16000])
            t_pad = median_ms(lambda: padded(mels, lengths), args.repeats)
            t_trim = median_ms(lambda: trimmed(mels, lengths), args.repeats)
            print(f"{seconds:3d} s clip: padded {t_pad:7.1f} ms   trimmed {t_trim:7.1f} ms   "
                  f"padded / trimmed = {t_pad / t_trim:5.1f}x")

    print("== 2./3. trimmed vs padded features on real frames; Whisper's decoder on each")
    references, hyp_padded, hyp_trimmed = [], [], []
    with torch.no_grad():
        for name, reference in TRANSCRIPTS.items():
            waveform = load_audio(PROMPTS / f"{name}.wav")
            mels, lengths = features(processor, waveform)
            full = model.model.encoder(mels).last_hidden_state  # [1, 1500, C], Whisper's own
            real, _ = padded(mels, lengths)
            short, _ = trimmed(mels, lengths)
            cosine = torch.nn.functional.cosine_similarity(real[0], short[0], dim=-1)
            relative = float((real - short).norm() / real.norm())
            spliced = full.clone()
            spliced[:, : short.shape[1]] = short
            texts = []
            for encoded in (full, spliced):
                out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded), max_new_tokens=120)
                texts.append(processor.batch_decode(out, skip_special_tokens=True)[0].strip())
            references.append(reference)
            hyp_padded.append(texts[0])
            hyp_trimmed.append(texts[1])
            print(f"{name:26s} {waveform.numel() / 16000:5.1f} s  rel.L2 {relative:.3f}  cos mean {cosine.mean():.3f}"
                  f"  WER {wer(reference, texts[0]):.2f} -> {wer(reference, texts[1]):.2f}"
                  + ("" if texts[0] == texts[1] else f"   {texts[0]!r} -> {texts[1]!r}"))
    words = sum(len(normalize_text(r).split()) for r in references)
    print(f"decoder WER over {len(references)} prompts ({words} words): padded {wer(references, hyp_padded):.3f}, "
          f"trimmed {wer(references, hyp_trimmed):.3f}")


if __name__ == "__main__":
    main()
