"""Modality ids carried next to the hidden states, one per token; the names are used in configs."""
from __future__ import annotations

MODALITY_IDS: dict[str, int] = {"text": 0, "image": 1, "audio": 2, "video": 3}
MODALITY_NAMES: dict[int, str] = {i: name for name, i in MODALITY_IDS.items()}
