"""Word error rate for speech outputs, with one text normalisation shared by every speech evaluation.

    normalize_text("Oh, hello. I didn't know!")  ->  "oh hello i didn't know"
    wer(references, hypotheses) = sum of word-level edit distances / number of reference words

The corpus-level WER (errors summed over all pairs, divided by all reference words) is the usual
definition (as in jiwer and the ASR literature), not the mean of per-utterance rates. The edit distance
counts substitutions, deletions and insertions at cost 1 each, so WER can exceed 1.0 (many insertions).

Normalisation (applied to both sides): Unicode NFKC, lower case, curly apostrophes made straight,
hyphens/dashes/slashes split words, every other punctuation mark removed (apostrophes inside words are
kept: "didn't", "i'm"), whitespace collapsed. Numbers are not spelled out: "2" and "two" differ.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_SPLITTERS = re.compile(r"[-\u2010-\u2015/]")  # hyphen, dashes, slash -> word boundary
_APOSTROPHES = re.compile(r"[\u2018\u2019\u02bc`]")


def normalize_text(text: str) -> str:
    """Lower-cased words separated by single spaces, punctuation removed (word-internal apostrophes kept)."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("'", text)
    text = _SPLITTERS.sub(" ", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char == "'" or not (category.startswith("P") or category.startswith("S")):
            kept.append(char)
        else:
            kept.append(" ")
    words = []
    for word in "".join(kept).split():
        word = word.strip("'")  # quotes around a word, not an apostrophe inside it
        if word:
            words.append(word)
    return " ".join(words)


def word_edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word lists (substitution, deletion, insertion: 1 each)."""
    previous = list(range(len(hypothesis) + 1))  # distance from reference[:0] to hypothesis[:j]
    for i, ref_word in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_word in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1,  # deletion of ref_word
                             current[j - 1] + 1,  # insertion of hyp_word
                             previous[j - 1] + (ref_word != hyp_word))  # match or substitution
        previous = current
    return previous[-1]


def _as_list(texts: str | Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be strings, got {bad[0]}")
    return texts


def wer(references: str | Sequence[str], hypotheses: str | Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate of hypotheses against references (one string, or equally long lists)."""
    references, hypotheses = _as_list(references, "references"), _as_list(hypotheses, "hypotheses")
    if len(references) != len(hypotheses):
        raise ValueError(f"wer needs one hypothesis per reference: {len(references)} references, "
                         f"{len(hypotheses)} hypotheses")
    prepare = normalize_text if normalize else (lambda t: t)
    errors = words = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref_words, hyp_words = prepare(reference).split(), prepare(hypothesis).split()
        errors += word_edit_distance(ref_words, hyp_words)
        words += len(ref_words)
    if words == 0:
        raise ValueError("wer is undefined: the references hold no words (after normalisation)")
    return errors / words
