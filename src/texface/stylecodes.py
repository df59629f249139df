"""Style-code datasets: the on-disk format (data/README.md), its validating loader and a torch Dataset.

The format sits on the ground floor because two stages share it: inversion writes style-code datasets and the SCD
trains on them.

A dataset is a directory::

    codes.safetensors   codes (N, 14, 512) f32, expressions (N, 50) f32, optional cameras (N, 25) f32,
                        optional has_exp (N,) bool
    captions.jsonl      line n: {"id": "<unique id>", "captions": ["...", ...]} for code n (list may be empty)
    meta.json           optional JSON object (source, attribute names, generator settings, labels, ...)

Everything is validated on load and on construction; every problem raises ``DataFormatError`` with a message that
names the file, the tensor or the line, and says how to fix it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from texface.atomic import atomic_directory
from texface.errors import DataFormatError

N_TOKENS, CODE_DIM, EXP_DIM, CAMERA_DIM = 14, 512, 50, 25
CODES_FILE, CAPTIONS_FILE, META_FILE = "codes.safetensors", "captions.jsonl", "meta.json"
REQUIRED_TENSORS = ("codes", "expressions")
OPTIONAL_TENSORS = ("cameras", "has_exp")
_TAIL_SHAPES = {"codes": (N_TOKENS, CODE_DIM), "expressions": (EXP_DIM,), "cameras": (CAMERA_DIM,), "has_exp": ()}
_FORMAT_HINT = "see data/README.md for the style-code dataset format"


def _shape_text(tail: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *map(str, tail)]) + ")"


def _check_tensor(name: str, value, where: str) -> int:
    """Check dtype, shape and finiteness of one named tensor; return its N."""
    if not isinstance(value, torch.Tensor):
        raise DataFormatError(f"{where}: '{name}' must be a torch.Tensor, got {type(value).__name__}")
    tail = _TAIL_SHAPES[name]
    want_dtype = torch.bool if name == "has_exp" else torch.float32
    if value.dim() != 1 + len(tail) or tuple(value.shape[1:]) != tail:
        raise DataFormatError(f"{where}: tensor '{name}' must have shape {_shape_text(tail)}, "
                              f"got {tuple(value.shape)}")
    if value.dtype != want_dtype:
        fix = ".bool()" if want_dtype == torch.bool else ".float()"
        raise DataFormatError(f"{where}: tensor '{name}' has dtype {str(value.dtype).removeprefix('torch.')}, "
                              f"expected {str(want_dtype).removeprefix('torch.')} (convert it with {fix})")
    if want_dtype != torch.bool:
        bad = (~torch.isfinite(value)).reshape(value.shape[0], -1).any(dim=1)  # (N,)
        if bad.any():
            rows = bad.nonzero().flatten()
            raise DataFormatError(f"{where}: tensor '{name}' has NaN/inf values in {len(rows)} row(s), first at "
                                  f"index {rows[0].item()}; fix or drop those codes")
    return value.shape[0]


def _check_captions(captions, ids, n: int, where: str) -> None:
    if not isinstance(captions, list) or not isinstance(ids, list):
        raise DataFormatError(f"{where}: captions and ids must be lists, got {type(captions).__name__} and "
                              f"{type(ids).__name__}")
    if len(captions) != n or len(ids) != n:
        raise DataFormatError(f"{where}: there are {n} codes but {len(captions)} caption lists and {len(ids)} ids; "
                              f"every code needs exactly one id and one (possibly empty) caption list")
    seen: dict[str, str] = {}
    for i, (cid, caps) in enumerate(zip(ids, captions)):
        _check_entry(cid, caps, f"{where}, code {i}", f"code {i}", seen)


def _check_entry(cid, caps, where: str, label: str, seen: dict[str, str]) -> None:
    """One code's id and caption list. ``where`` locates the entry in messages, ``label`` is its short name, and
    ``seen`` maps the ids met so far to their labels (updated here)."""
    if not isinstance(cid, str) or not cid:
        raise DataFormatError(f"{where}: 'id' must be a non-empty string, got {cid!r}")
    if cid in seen:
        raise DataFormatError(f"{where}: id {cid!r} is already used ({seen[cid]}); ids must be unique")
    seen[cid] = label
    if not isinstance(caps, list):
        raise DataFormatError(f"{where}: 'captions' must be a list of strings (possibly empty), got "
                              f"{type(caps).__name__}")
    for j, cap in enumerate(caps):
        if not isinstance(cap, str):
            raise DataFormatError(f"{where}: caption {j} must be a string, got {type(cap).__name__} {cap!r}")
        if not cap.strip():
            raise DataFormatError(f"{where}: caption {j} is empty; drop it (an empty list already means "
                                  f"'no caption')")


@dataclass
class StyleCodeSet:
    """N style codes with their captions, expressions, ids and (optionally) cameras; validated on construction.

    Args:
        codes: (N, 14, 512) float32 W+ style codes.
        expressions: (N, 50) float32 FLAME expression codes.
        captions: N lists of caption strings (a list may be empty: that code has no caption).
        ids: N unique non-empty strings (the source image or sample of each code).
        cameras: optional (N, 25) float32 EG3D camera labels (16 cam2world + 9 intrinsics).
        has_exp: optional (N,) bool, False where a code has no real expression (its row is then ignored);
            None means every code has one. Always a tensor after construction.
        meta: free-form JSON-serialisable information (source, attribute names, generator settings, ...).
    """

    codes: torch.Tensor
    expressions: torch.Tensor
    captions: list[list[str]]
    ids: list[str]
    cameras: torch.Tensor | None = None
    has_exp: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate("StyleCodeSet")

    def validate(self, where: str) -> None:
        """Raise DataFormatError (prefixed by ``where``) unless every field follows the format."""
        n = _check_tensor("codes", self.codes, where)
        for name in ("expressions", "cameras", "has_exp"):
            value = getattr(self, name)
            if value is None:
                continue
            if _check_tensor(name, value, where) != n:
                raise DataFormatError(f"{where}: there are {n} codes but tensor '{name}' has {value.shape[0]} "
                                      f"rows; both must describe the same codes in the same order")
        if self.has_exp is None:
            self.has_exp = torch.ones(n, dtype=torch.bool)
        _check_captions(self.captions, self.ids, n, where)
        if not isinstance(self.meta, dict):
            raise DataFormatError(f"{where}: meta must be a dict (a JSON object), got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return self.codes.shape[0]

    def first_captions(self) -> list[str]:
        """The first caption of every code, "" for uncaptioned codes (the condition used for evaluation)."""
        return [caps[0] if caps else "" for caps in self.captions]

    def __repr__(self) -> str:
        n_captions = sum(len(c) for c in self.captions)
        n_empty = sum(not c for c in self.captions)
        return (f"StyleCodeSet(n={len(self)}, captions={n_captions}, uncaptioned={n_empty}, "
                f"cameras={self.cameras is not None}, has_exp={int(self.has_exp.sum())}, "
                f"meta={sorted(self.meta)})")

    def subset(self, indices: Sequence[int] | torch.Tensor) -> StyleCodeSet:
        """The codes at ``indices`` (in that order), with a copy of ``meta``."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)}), got min {idx.min().item()} and "
                             f"max {idx.max().item()}")
        rows = idx.tolist()
        return StyleCodeSet(codes=self.codes[idx], expressions=self.expressions[idx],
                            captions=[list(self.captions[i]) for i in rows], ids=[self.ids[i] for i in rows],
                            cameras=None if self.cameras is None else self.cameras[idx],
                            has_exp=self.has_exp[idx], meta=dict(self.meta))

    @classmethod
    def load(cls, path: str | os.PathLike) -> StyleCodeSet:
        """Read and validate a dataset directory; raise DataFormatError saying what is wrong and how to fix it."""
        path = Path(path)
        if not path.exists():
            raise DataFormatError(f"style-code dataset not found: {path}")
        if not path.is_dir():
            raise DataFormatError(f"{path} is not a directory; a style-code dataset is a directory holding "
                                  f"{CODES_FILE} and {CAPTIONS_FILE} ({_FORMAT_HINT})")
        tensors = _read_tensors(path / CODES_FILE)
        captions, ids = read_captions(path / CAPTIONS_FILE)
        meta = _read_meta(path / META_FILE)
        n = tensors["codes"].shape[0]
        if len(ids) != n:
            raise DataFormatError(f"{path}: {CODES_FILE} holds {n} codes but {CAPTIONS_FILE} has {len(ids)} lines; "
                                  f"it needs exactly one line per code, in the same order")
        return cls(**tensors, captions=captions, ids=ids, meta=meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset directory atomically (a temporary sibling renamed into place).

        An existing style-code dataset at ``path`` is replaced; any other existing, non-empty path is refused.
        """
        self.validate("StyleCodeSet")
        path = Path(path)
        if path.exists() and not (path.is_dir() and ((path / CODES_FILE).is_file() or not any(path.iterdir()))):
            raise DataFormatError(f"refusing to overwrite {path}: it exists and is not a style-code dataset; "
                                  f"choose another path or remove it")
        try:  # one top-level key per line, values compact (label lists would otherwise take a line per number)
            items = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True, allow_nan=False)}"
                     for k, v in sorted(self.meta.items())]
            meta_text = "{\n" + ",\n".join(items) + "\n}" if items else "{}"
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"meta is not JSON-serialisable: {err}") from None
        tensors = {"codes": self.codes, "expressions": self.expressions}
        if self.cameras is not None:
            tensors["cameras"] = self.cameras
        if not bool(self.has_exp.all()):
            tensors["has_exp"] = self.has_exp
        lines = [json.dumps({"id": i, "captions": c}, ensure_ascii=False) + "\n"
                 for i, c in zip(self.ids, self.captions)]

        with atomic_directory(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / CODES_FILE))
            (tmp / CAPTIONS_FILE).write_text("".join(lines), encoding="utf-8")
            (tmp / META_FILE).write_text(meta_text + "\n", encoding="utf-8")
        return path


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise DataFormatError(f"{file} is missing; a style-code dataset needs it ({_FORMAT_HINT})")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataFormatError(f"{file} is not a readable safetensors file ({err}); rewrite it with "
                              f"StyleCodeSet.save or safetensors.torch.save_file") from None
    found = ", ".join(sorted(tensors)) or "nothing"
    for name in REQUIRED_TENSORS:
        if name not in tensors:
            raise DataFormatError(f"{file} has no tensor '{name}' (found: {found}); it must hold 'codes' "
                                  f"(N, 14, 512) and 'expressions' (N, 50)")
    unknown = sorted(set(tensors) - set(REQUIRED_TENSORS) - set(OPTIONAL_TENSORS))
    if unknown:
        allowed = ", ".join(REQUIRED_TENSORS + OPTIONAL_TENSORS)
        raise DataFormatError(f"{file} has unexpected tensor(s) {', '.join(map(repr, unknown))}; allowed names "
                              f"are {allowed} (rename or remove the others)")
    n = _check_tensor("codes", tensors["codes"], str(file))
    for name in ("expressions", *OPTIONAL_TENSORS):
        if name in tensors and _check_tensor(name, tensors[name], str(file)) != n:
            raise DataFormatError(f"{file}: tensor 'codes' has {n} rows but '{name}' has {tensors[name].shape[0]}; "
                                  f"both must describe the same codes in the same order")
    return tensors


def read_captions(file: Path) -> tuple[list[list[str]], list[str]]:
    """Parse captions.jsonl into (captions, ids), checking every line; errors name the 1-based line."""
    if not file.is_file():
        raise DataFormatError(f"{file} is missing; write one JSON line {{\"id\": ..., \"captions\": [...]}} per "
                              f"code ({_FORMAT_HINT})")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{file} is not UTF-8 text: {err}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    captions, ids, seen = [], [], {}
    for number, line in enumerate(lines, start=1):
        where = f"{file}, line {number}"
        if not line.strip():
            raise DataFormatError(f"{where} is empty; every line must describe one code (no blank lines)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{where} is not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where} must be a JSON object {{\"id\": ..., \"captions\": [...]}}, "
                                  f"got {type(obj).__name__}")
        for key in ("id", "captions"):
            if key not in obj:
                raise DataFormatError(f"{where} has no key '{key}'; each line needs \"id\" and \"captions\"")
        extra = sorted(set(obj) - {"id", "captions"})
        if extra:
            raise DataFormatError(f"{where} has unexpected key(s) {', '.join(map(repr, extra))}; only \"id\" and "
                                  f"\"captions\" are allowed (put other information in {META_FILE})")
        cid, caps = obj["id"], obj["captions"]
        _check_entry(cid, caps, where, f"line {number}", seen)
        captions.append(caps)
        ids.append(cid)
    return captions, ids


def _read_meta(file: Path) -> dict:
    if not file.exists():
        return {}
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{file} must hold a JSON object, got {type(meta).__name__}")
    return meta


def _mix64(*values: int) -> int:
    """A deterministic 64-bit hash of integers (splitmix64 finaliser), independent of PYTHONHASHSEED."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h


class StyleCodeDataset(Dataset):
    """Items of a StyleCodeSet: {'code' (14, 512), 'caption' str, 'exp' (50,), 'has_exp' bool}.

    A code with several captions yields one of them: a choice that depends only on (seed, epoch, index), so runs
    are reproducible, DataLoader workers agree, and each epoch can see another caption (call ``set_epoch``).
    A code without captions yields ''.

    Args:
        data: the StyleCodeSet to read.
        indices: the codes of ``data`` this dataset covers (e.g. one side of ``train_val_split``); None = all.
        seed: seed of the caption choice.
        first_caption: always yield each code's first caption (fixed validation batches).
    """

    def __init__(self, data: StyleCodeSet, indices: Sequence[int] | torch.Tensor | None = None, *, seed: int = 0,
                 first_caption: bool = False):
        self.data = data
        n = len(data)
        self.indices = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"StyleCodeDataset indices must lie in [0, {n}), got {bad[0]}")
        self.seed, self.first_caption, self.epoch = int(seed), bool(first_caption), 0

    def set_epoch(self, epoch: int) -> None:
        """Select the captions of another epoch (same epoch, same captions)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def caption_of(self, index: int) -> str:
        """The caption code ``index`` of the underlying set yields in the current epoch."""
        caps = self.data.captions[index]
        if not caps:
            return ""
        if self.first_caption:
            return caps[0]
        return caps[_mix64(self.seed, self.epoch, index) % len(caps)]

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        return {"code": self.data.codes[index], "caption": self.caption_of(index),
                "exp": self.data.expressions[index], "has_exp": bool(self.data.has_exp[index])}


def train_val_split(ids: Sequence[str], *, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic split of codes into (train indices, val indices), decided by the ids alone.

    Each id gets a seeded SHA-256 rank; the ``round(val_fraction * N)`` lowest ranks (at least 1 and at most
    N - 1 when N >= 2) go to validation. The split therefore depends on the ids, not on their order, and an id keeps
    its side when the file is reordered. Both lists are sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("train_val_split needs unique ids")
    n = len(ids)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    rank = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).digest())
    val = sorted(rank[:n_val])
    val_set = set(val)
    return [i for i in range(n) if i not in val_set], val
