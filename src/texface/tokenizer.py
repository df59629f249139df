"""OpenAI CLIP's tokenizer, offline: captions -> the 77 token ids of ``clip.tokenize(captions, truncate=True)``.

The BPE vocabulary ships in ``texface/assets`` (MIT, from OpenAI's CLIP). Every CLIP-shaped model of the project
uses it: the SCD's text tower (:mod:`scd.text`), the world CLIP (:mod:`faceworld.clip`) and CLIP scores.
"""
from __future__ import annotations

import functools
import gzip
import html
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
import torch

BPE_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
SOT_TOKEN = 49406  # <|startoftext|>
EOT_TOKEN = 49407  # <|endoftext|>
N_MERGES = 49152 - 256 - 2  # OpenAI keeps the first 48894 merges of the file

# OpenAI's pre-tokenization: the two special tokens, English contractions, letter runs, single digits, and
# runs of other non-space characters. Applied to cleaned, lower-cased text.
_PIECES = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_SPECIAL = {"<|startoftext|>": SOT_TOKEN, "<|endoftext|>": EOT_TOKEN}


def _byte_symbols() -> list[tuple[int, str]]:
    """(byte, symbol) pairs in vocabulary order: each byte as a visible unicode character.

    Printable Latin-1 bytes stand for themselves (first, in byte order); the remaining bytes (controls, space,
    soft hyphen, ...) are given the characters 256, 257, ... in byte order, so no symbol is whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [(b, chr(b)) for b in printable] + [(b, chr(256 + n)) for n, b in enumerate(others)]


@functools.lru_cache(maxsize=4)
def _load_vocabulary(path: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(symbol -> id, merge pair -> rank) from an OpenAI BPE merge file (gzip text, first line a header)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} is not OpenAI's CLIP BPE merge file (expected {N_MERGES} merge pairs)")
    bytes_ = [s for _, s in _byte_symbols()]
    symbols = bytes_ + [s + "</w>" for s in bytes_] + ["".join(m) for m in merges] + list(_SPECIAL)
    vocab = {s: i for i, s in enumerate(symbols)}
    assert vocab["<|startoftext|>"] == SOT_TOKEN and vocab["<|endoftext|>"] == EOT_TOKEN
    return vocab, {m: rank for rank, m in enumerate(merges)}


def clean_caption(text: str) -> str:
    """OpenAI's text normalisation: fix mojibake, unescape HTML (twice), collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """OpenAI CLIP's BPE tokenizer; `tokenizer(captions)` equals `clip.tokenize(captions, truncate=True)`.

    Args:
        bpe_path: the gzipped merge file (default: the copy in scd/assets).
        context_length: length of every returned row; longer captions keep their first context_length - 1
            tokens (start token included) and end with the end token.
    """

    def __init__(self, bpe_path: str | Path = BPE_PATH, *, context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start + end token), got {context_length}")
        self.vocab, self.ranks = _load_vocabulary(str(bpe_path))
        self.context_length = context_length
        self._words: dict[str, list[int]] = {}  # pre-token -> ids; words repeat a lot across captions

    def _bpe(self, word: str) -> list[int]:
        """Ids of one pre-token (already mapped to byte symbols): repeatedly merge the lowest-ranked pair."""
        if word in self._words:
            return self._words[word]
        parts = [*word[:-1], word[-1] + "</w>"]  # the end-of-word marker rides on the last symbol
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, N_MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every non-overlapping occurrence, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.vocab[p] for p in parts]
        self._words[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one caption, without start/end tokens and without truncation."""
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a str, got {type(text).__name__}")
        ids: list[int] = []
        for piece in _PIECES.findall(clean_caption(text)):
            if piece in _SPECIAL:
                ids.append(_SPECIAL[piece])
            else:
                ids.extend(self._bpe("".join(_BYTE_TO_SYMBOL[b] for b in piece.encode("utf-8"))))
        return ids

    def __call__(self, captions: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length) int64: start, BPE tokens, end, zeros."""
        captions = caption_list(captions)
        out = torch.zeros(len(captions), self.context_length, dtype=torch.long)  # (B, 77)
        for row, caption in enumerate(captions):
            ids = [SOT_TOKEN, *self.encode(caption), EOT_TOKEN][: self.context_length]
            ids[-1] = EOT_TOKEN  # a truncated caption still ends with the end token
            out[row, : len(ids)] = torch.tensor(ids)
        return out


_BYTE_TO_SYMBOL = dict(_byte_symbols())


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The shared 77-token tokenizer (the vocabulary is read once per process)."""
    return ClipTokenizer()


def caption_list(captions: str | Sequence[str]) -> list[str]:
    if isinstance(captions, str):
        return [captions]
    captions = list(captions)
    bad = [type(c).__name__ for c in captions if not isinstance(c, str)]
    if bad:
        raise TypeError(f"captions must be strings, got {', '.join(sorted(set(bad)))}")
    return captions
