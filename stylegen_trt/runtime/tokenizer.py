"""Prompt -> CLIP token ids, through the `tokenizers` library and the bundle's tokenizer.json.

Padding and truncation follow CLIP as SD uses it: <bos> tokens <eos>, padded with the
pad id to ``max_length``; a prompt that does not fit keeps its first ``max_length - 2``
tokens and still ends in <eos> (what transformers' CLIPTokenizer does with truncation).

A tokenizer built for a few words (the demo's 13, the tiny model's: a vocabulary of at most
``SMALL_VOCABULARY`` tokens) has a whole-word token for each of them and spells any other word out
byte by byte, pieces its text encoder never learnt a meaning for: such words are named in a
one-line warning (once per prompt). A real CLIP vocabulary splits rare words into known pieces, so
nothing is said there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

SMALL_VOCABULARY = 1000  # CLIP's has 49408 tokens; the demo's 559 (bytes, 13 words, their merges)


class PromptTokenizer:
    def __init__(self, path: Path, max_length: int, bos_id: int, eos_id: int, pad_id: int):
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = max_length
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.vocab = self.tokenizer.get_vocab()
        self.small_vocabulary = len(self.vocab) <= SMALL_VOCABULARY
        # whole-word tokens longer than one character: what a small vocabulary was built for
        self.words = sorted(t[:-4] for t in self.vocab if t.endswith("</w>") and len(t) > 5)
        self._warned: set[str] = set()

    @classmethod
    def from_manifest(cls, root: Path, tok: dict) -> "PromptTokenizer":
        return cls(root / tok["file"], tok["max_length"], tok["bos_id"], tok["eos_id"], tok["pad_id"])

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` a small vocabulary was not built for (no whole-word token: spelled
        out byte by byte); [] for a real CLIP vocabulary. A known word may still be split by the
        merges (the demo's "triangle" is 7 tokens, as it was in training): the vocabulary decides."""
        if not self.small_vocabulary:
            return []
        encoding = self.tokenizer.encode(prompt, add_special_tokens=False)
        spans: dict[int, list[int]] = {}
        for word, (start, end) in zip(encoding.word_ids, encoding.offsets):
            if word is not None:
                spans.setdefault(word, [start, end])[1] = end
        unknown = []
        for start, end in spans.values():
            word = prompt[start:end]
            if any(c.isalpha() for c in word) and f"{word.lower()}</w>" not in self.vocab and word not in unknown:
                unknown.append(word)
        return unknown

    def _warn_unknown(self, prompt: str) -> None:
        if prompt in self._warned:
            return
        unknown = self.unknown_words(prompt)
        if unknown:
            if len(self._warned) >= 1024:  # a server sees endless prompts: bounded memory, rare repeats
                self._warned.clear()
            self._warned.add(prompt)
            known = ", ".join(self.words) if len(self.words) <= 40 else f"{len(self.words)} words"
            log.warning("this model does not know the word%s %s: its tokenizer spells %s out letter by letter, "
                        "which means nothing to the model (words it knows: %s)", "s" if len(unknown) > 1 else "",
                        ", ".join(repr(w) for w in unknown), "them" if len(unknown) > 1 else "it", known)

    def __call__(self, prompts: list[str]) -> np.ndarray:
        """(len(prompts), max_length) int64 ids."""
        out = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int64)
        for row, prompt in enumerate(prompts):
            self._warn_unknown(prompt)
            ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
            if len(ids) > self.max_length - 2:
                log.warning("prompt is %d tokens; only the first %d are used: %r",
                            len(ids), self.max_length - 2, prompt[:60])
                ids = ids[: self.max_length - 2]
            seq = [self.bos_id, *ids, self.eos_id]
            out[row, : len(seq)] = seq
        return out
