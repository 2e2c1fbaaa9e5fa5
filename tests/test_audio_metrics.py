"""pipelines.speech_metrics: word error rate against hand-counted edits and a brute-force edit distance."""
import functools
import random

import pytest

from zoo.pipelines.speech_metrics import normalize_text, wer, word_edit_distance


def brute_force_distance(ref: tuple, hyp: tuple) -> int:
    """The textbook recursion, memoised: an independent reference for the dynamic programme."""
    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (ref[i - 1] != hyp[j - 1]))
    return d(len(ref), len(hyp))


def test_normalisation_lowercases_and_drops_punctuation_but_keeps_apostrophes():
    assert normalize_text("Oh, hello. I didn't know you were there!") == "oh hello i didn't know you were there"
    assert normalize_text("Call-Forward on No Answer.") == "call forward on no answer"
    assert normalize_text("I\u2019m Sheila \u2014 in   Texas") == "i'm sheila in texas"
    assert normalize_text("'quoted' \"words\" (here)") == "quoted words here"
    assert normalize_text("...") == ""


def test_hand_counted_errors():
    assert wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)  # 1 sub + 1 del
    assert wer("a b", "a b c d") == pytest.approx(1.0)  # 2 insertions: WER can reach 1 and beyond
    assert wer("Hello world.", " Hello world!") == 0.0  # punctuation and case do not count
    assert wer("Hello world.", " Hello world!", normalize=False) == pytest.approx(0.5)  # "world." vs "world!"


def test_corpus_wer_sums_errors_over_all_reference_words():
    # 1 error / 2 words and 1 error / 3 words: corpus 2/5 = 0.4, not the mean of rates (0.4167)
    assert wer(["hello world", "a b c"], ["hello", "a x c"]) == pytest.approx(0.4)


def test_edit_distance_matches_brute_force_on_random_word_lists():
    rng = random.Random(0)
    for _ in range(200):
        ref = tuple(rng.choice("abcd") for _ in range(rng.randint(0, 7)))
        hyp = tuple(rng.choice("abcd") for _ in range(rng.randint(0, 7)))
        assert word_edit_distance(ref, hyp) == brute_force_distance(ref, hyp), (ref, hyp)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="2 references, 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer("!!", "a")
    with pytest.raises(TypeError, match="hypotheses must be strings"):
        wer(["a"], [None])
