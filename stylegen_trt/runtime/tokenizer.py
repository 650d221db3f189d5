"""Prompt -> CLIP token ids, through the `tokenizers` library and the bundle's tokenizer.json.

Padding and truncation follow CLIP as SD uses it: <bos> tokens <eos>, padded with the
pad id to ``max_length``; a prompt that does not fit keeps its first ``max_length - 2``
tokens and still ends in <eos> (what transformers' CLIPTokenizer does with truncation).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

log = logging.getLogger(__name__)


class PromptTokenizer:
    def __init__(self, path: Path, max_length: int, bos_id: int, eos_id: int, pad_id: int):
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = max_length
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    @classmethod
    def from_manifest(cls, root: Path, tok: dict) -> "PromptTokenizer":
        return cls(root / tok["file"], tok["max_length"], tok["bos_id"], tok["eos_id"], tok["pad_id"])

    def __call__(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), max_length) int64 ids."""
        out = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
            if len(ids) > self.max_length - 2:
                log.warning("prompt is %d tokens; only the first %d are used: %r",
                            len(ids), self.max_length - 2, prompt[:60])
                ids = ids[: self.max_length - 2]
            seq = [self.bos_id, *ids, self.eos_id]
            out[row, : len(seq)] = seq
        return out
