"""WordNet's glosses as a language-modelling corpus (Debian `wordnet-base`: 117k English definitions with
their usage examples, real text that needs no download at run time; `apt-get install wordnet-base`).

    texts = wordnet_glosses()                        # ["dog: a member of the genus Canis ...", ...]
    splits = gloss_splits()                          # {"train": [...], "validation": [...], "test": [...]}
    rows = packed_sequences(tokenizer, splits["test"], seq_len=128)   # [N, 128] token ids

The split is by gloss (one synset's text never straddles two splits) and fixed by its own seed, so every
experiment that uses it sees the same held-out text.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

WORDNET = Path("/usr/share/wordnet")
SPLIT_SEED = 0


def wordnet_glosses(folder: Path = WORDNET) -> list[str]:
    """'lemma: gloss' for every synset of the four WordNet data files (the license header is skipped)."""
    files = [folder / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"WordNet data files missing: {missing}; install them with `apt-get install wordnet-base`")
    texts = []
    for path in files:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # license header lines start with two spaces
            fields, gloss = line.split(" | ", 1)
            lemma = fields.split()[4].replace("_", " ")
            texts.append(f"{lemma}: {gloss.strip()}")
    return texts


def gloss_splits(validation: float = 0.05, test: float = 0.05, seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """The glosses shuffled once and cut into train / validation / test (fractions of the glosses)."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise ValueError(f"gloss_splits: validation ({validation}) and test ({test}) must be fractions summing below 1")
    texts = wordnet_glosses()
    random.Random(seed).shuffle(texts)
    n_test, n_validation = int(len(texts) * test), int(len(texts) * validation)
    return {"test": texts[:n_test], "validation": texts[n_test:n_test + n_validation],
            "train": texts[n_test + n_validation:]}


def packed_sequences(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate the texts (one per line) and cut the token stream into [N, seq_len] rows (the tail
    shorter than one row is the only text left out)."""
    ids = tokenizer("\n".join(texts), return_tensors="pt")["input_ids"][0]
    rows = len(ids) // seq_len
    if rows == 0:
        raise ValueError(f"packed_sequences: {len(ids)} tokens do not fill one row of {seq_len}")
    return ids[: rows * seq_len].view(rows, seq_len)
