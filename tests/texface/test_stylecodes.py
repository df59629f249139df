"""The style-code dataset format: round trip, every validation error, the torch Dataset and the split helper."""
from __future__ import annotations

import json
import os
import random
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from texface.errors import DataFormatError
from texface.stylecodes import CAPTIONS_FILE, CODES_FILE, META_FILE, StyleCodeDataset, StyleCodeSet, train_val_split

N = 5


def make_set(n: int = N, *, cameras: bool = True, seed: int = 0) -> StyleCodeSet:
    g = torch.Generator().manual_seed(seed)
    captions = [["This man has a beard.", "He is smiling."], [], ["Une femme à lunettes ☺"], ["a", "b", "c"], ["x"]]
    has_exp = torch.ones(n, dtype=torch.bool)
    has_exp[1] = False
    return StyleCodeSet(codes=torch.randn(n, 14, 512, generator=g), expressions=torch.randn(n, 50, generator=g),
                        captions=[list(captions[i % len(captions)]) for i in range(n)],
                        ids=[f"img_{i:03d}" for i in range(n)],
                        cameras=torch.randn(n, 25, generator=g) if cameras else None, has_exp=has_exp,
                        meta={"source": "unit test", "attributes": ["a", "b"]})


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ds"
    make_set().save(path)
    return path


def test_round_trip(tmp_path):
    data = make_set()
    path = data.save(tmp_path / "ds")
    back = StyleCodeSet.load(path)
    assert torch.equal(back.codes, data.codes) and torch.equal(back.expressions, data.expressions)
    assert torch.equal(back.cameras, data.cameras) and torch.equal(back.has_exp, data.has_exp)
    assert back.captions == data.captions and back.ids == data.ids and back.meta == data.meta
    assert back.codes.dtype == torch.float32 and back.has_exp.dtype == torch.bool
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's owner-only mode
    assert stat.S_IMODE((path / CODES_FILE).stat().st_mode) == 0o666 & ~umask


def test_optional_parts_are_optional(tmp_path):
    data = make_set(cameras=False)
    data.has_exp = torch.ones(N, dtype=torch.bool)
    path = data.save(tmp_path / "ds")
    assert set(load_file(str(path / CODES_FILE))) == {"codes", "expressions"}
    assert json.loads((path / META_FILE).read_text()) == data.meta
    data.meta = {}
    data.save(path)
    assert (path / META_FILE).read_text() == "{}\n"
    (path / META_FILE).unlink()
    back = StyleCodeSet.load(path)
    assert back.cameras is None and back.meta == {} and bool(back.has_exp.all())


def test_save_replaces_a_dataset_atomically_and_refuses_other_paths(tmp_path, saved):
    other = make_set(seed=1)
    other.save(saved)
    assert torch.equal(StyleCodeSet.load(saved).codes, other.codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary or old directories left
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    with pytest.raises(DataFormatError, match="refusing to overwrite"):
        other.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"
    with pytest.raises(DataFormatError, match="meta is not JSON-serialisable"):
        StyleCodeSet(codes=other.codes, expressions=other.expressions, captions=other.captions, ids=other.ids,
                     meta={"bad": torch.ones(1)}).save(tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()


def _rewrite_tensors(path, **changes):
    tensors = load_file(str(path / CODES_FILE))
    for key, value in changes.items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    save_file(tensors, str(path / CODES_FILE))


def _rewrite_lines(path, edit):
    lines = (path / CAPTIONS_FILE).read_text(encoding="utf-8").splitlines()
    (path / CAPTIONS_FILE).write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


def _line(obj) -> str:
    return json.dumps(obj)


def _nan_row(n_rows, shape, row, value=float("nan")):
    t = torch.zeros(n_rows, *shape)
    t[row].view(-1)[3] = value
    return t


BROKEN = {
    "missing codes file": (lambda p: (p / CODES_FILE).unlink(), [CODES_FILE, "is missing"]),
    "missing captions file": (lambda p: (p / CAPTIONS_FILE).unlink(), [CAPTIONS_FILE, "is missing"]),
    "corrupt safetensors": (lambda p: (p / CODES_FILE).write_bytes(b"not a safetensors file"),
                            ["not a readable safetensors file"]),
    "no codes tensor": (lambda p: _rewrite_tensors(p, codes=None), ["no tensor 'codes'", "found: cameras"]),
    "no expressions tensor": (lambda p: _rewrite_tensors(p, expressions=None), ["no tensor 'expressions'"]),
    "unexpected tensor": (lambda p: _rewrite_tensors(p, expression=torch.zeros(N, 50)),
                          ["unexpected tensor(s) 'expression'", "allowed names"]),
    "codes shape": (lambda p: _rewrite_tensors(p, codes=torch.zeros(N, 18, 512)),
                    ["'codes' must have shape (N, 14, 512)", "(5, 18, 512)"]),
    "expressions shape": (lambda p: _rewrite_tensors(p, expressions=torch.zeros(N, 100)),
                          ["'expressions' must have shape (N, 50)", "(5, 100)"]),
    "cameras shape": (lambda p: _rewrite_tensors(p, cameras=torch.zeros(N, 16)), ["'cameras' must have shape (N, 25)"]),
    "codes dtype": (lambda p: _rewrite_tensors(p, codes=torch.zeros(N, 14, 512, dtype=torch.float64)),
                    ["'codes' has dtype float64, expected float32", ".float()"]),
    "has_exp dtype": (lambda p: _rewrite_tensors(p, has_exp=torch.ones(N)), ["'has_exp' has dtype float32",
                                                                              "expected bool"]),
    "nan in codes": (lambda p: _rewrite_tensors(p, codes=_nan_row(N, (14, 512), 3)),
                     ["'codes' has NaN/inf", "1 row(s)", "first at index 3"]),
    "inf in expressions": (lambda p: _rewrite_tensors(p, expressions=_nan_row(N, (50,), 2, float("inf"))),
                           ["'expressions' has NaN/inf", "first at index 2"]),
    "N of expressions": (lambda p: _rewrite_tensors(p, expressions=torch.zeros(N - 1, 50)),
                         ["'codes' has 5 rows but 'expressions' has 4"]),
    "N of cameras": (lambda p: _rewrite_tensors(p, cameras=torch.zeros(N + 2, 25)),
                     ["'codes' has 5 rows but 'cameras' has 7"]),
    "N of captions": (lambda p: _rewrite_lines(p, lambda ls: ls[:-1]), ["holds 5 codes", "has 4 lines"]),
    "invalid json": (lambda p: _rewrite_lines(p, lambda ls: ls[:2] + ['{"id": "x", "captions": [}'] + ls[3:]),
                     [f"{CAPTIONS_FILE}, line 3 is not valid JSON"]),
    "not an object": (lambda p: _rewrite_lines(p, lambda ls: ['["img_000", []]'] + ls[1:]),
                      ["line 1 must be a JSON object", "got list"]),
    "missing id": (lambda p: _rewrite_lines(p, lambda ls: ls[:1] + [_line({"captions": []})] + ls[2:]),
                   ["line 2 has no key 'id'"]),
    "missing captions": (lambda p: _rewrite_lines(p, lambda ls: ls[:4] + [_line({"id": "zz"})]),
                         ["line 5 has no key 'captions'"]),
    "extra key": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": "a", "captions": [], "caption": "x"})] + ls[1:]),
                  ["line 1 has unexpected key(s) 'caption'"]),
    "empty id": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": "", "captions": []})] + ls[1:]),
                 ["line 1: 'id' must be a non-empty string"]),
    "numeric id": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": 7, "captions": []})] + ls[1:]),
                   ["line 1: 'id' must be a non-empty string, got 7"]),
    "duplicate id": (lambda p: _rewrite_lines(p, lambda ls: ls[:3] + [ls[1]] + ls[4:]),
                     ["line 4: id 'img_001' is already used (line 2)", "unique"]),
    "captions not a list": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": "a", "captions": "hi"})] + ls[1:]),
                            ["line 1: 'captions' must be a list of strings", "got str"]),
    "non-string caption": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": "a", "captions": ["ok", 3]})] + ls[1:]),
                           ["line 1: caption 1 must be a string, got int 3"]),
    "empty caption": (lambda p: _rewrite_lines(p, lambda ls: [_line({"id": "a", "captions": ["  "]})] + ls[1:]),
                      ["line 1: caption 0 is empty"]),
    "blank line": (lambda p: _rewrite_lines(p, lambda ls: ls[:2] + [""] + ls[2:]), ["line 3 is empty"]),
    "meta not json": (lambda p: (p / META_FILE).write_text("{oops"), [META_FILE, "is not valid JSON", "line 1"]),
    "meta not object": (lambda p: (p / META_FILE).write_text("[1, 2]"), [META_FILE, "must hold a JSON object"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_every_format_error_names_the_problem(saved, case):
    breaker, fragments = BROKEN[case]
    breaker(saved)
    with pytest.raises(DataFormatError) as info:
        StyleCodeSet.load(saved)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


def test_load_errors_for_bad_paths(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        StyleCodeSet.load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataFormatError, match="is not a directory"):
        StyleCodeSet.load(tmp_path / "file")
    assert issubclass(DataFormatError, ValueError)


def test_constructor_validates_in_memory_sets():
    good = make_set()
    fields = {"codes": good.codes, "expressions": good.expressions, "captions": good.captions, "ids": good.ids}
    with pytest.raises(DataFormatError, match="5 codes but 5 caption lists and 4 ids"):
        StyleCodeSet(**{**fields, "ids": good.ids[:4]})
    with pytest.raises(DataFormatError, match=r"code 2: id 'img_000' is already used \(code 0\)"):
        StyleCodeSet(**{**fields, "ids": ["img_000", "b", "img_000", "d", "e"]})
    with pytest.raises(DataFormatError, match="'codes' has dtype float64"):
        StyleCodeSet(**{**fields, "codes": good.codes.double()})
    with pytest.raises(DataFormatError, match="code 1: caption 0 must be a string"):
        StyleCodeSet(**{**fields, "captions": [["a"], [None], [], [], []]})
    with pytest.raises(DataFormatError, match="tensor 'cameras' has 3 rows"):
        StyleCodeSet(**fields, cameras=torch.zeros(3, 25))
    with pytest.raises(DataFormatError, match="meta must be a dict"):
        StyleCodeSet(**fields, meta=[1])


def test_subset_keeps_rows_together():
    data = make_set()
    sub = data.subset([4, 1])
    assert sub.ids == ["img_004", "img_001"] and sub.captions == [data.captions[4], data.captions[1]]
    assert torch.equal(sub.codes, data.codes[[4, 1]]) and torch.equal(sub.cameras, data.cameras[[4, 1]])
    assert sub.has_exp.tolist() == [True, False]
    with pytest.raises(IndexError):
        data.subset([5])


def test_dataset_items_and_deterministic_caption_choice():
    data = make_set(n=40)
    ds = StyleCodeDataset(data, seed=3)
    item = ds[0]
    assert item["code"].shape == (14, 512) and item["exp"].shape == (50,)
    assert item["caption"] in data.captions[0] and item["has_exp"] is True
    assert ds[1]["caption"] == "" and ds[1]["has_exp"] is False  # code 1 has no caption and no expression

    def captions(seed, epoch):
        d = StyleCodeDataset(data, seed=seed)
        d.set_epoch(epoch)
        return [d[i]["caption"] for i in range(len(d))]

    assert captions(3, 0) == captions(3, 0)
    assert captions(3, 0) != captions(3, 1) and captions(3, 0) != captions(4, 0)
    multi = [i for i in range(40) if len(data.captions[i]) > 1]
    seen = {i: {captions(3, e)[i] for e in range(30)} for i in multi}
    assert all(seen[i] == set(data.captions[i]) for i in multi)  # every caption gets its turn
    first = StyleCodeDataset(data, first_caption=True)
    first.set_epoch(5)
    assert [first[i]["caption"] for i in multi] == [data.captions[i][0] for i in multi]


def test_dataset_over_indices_and_collate():
    data = make_set(n=10)
    ds = StyleCodeDataset(data, [7, 2, 3])
    assert len(ds) == 3 and torch.equal(ds[0]["code"], data.codes[7])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["code"].shape == (3, 14, 512) and batch["exp"].shape == (3, 50)
    assert batch["has_exp"].dtype == torch.bool and len(batch["caption"]) == 3
    with pytest.raises(IndexError):
        StyleCodeDataset(data, [10])


def test_train_val_split_is_deterministic_by_ids():
    ids = [f"face_{i}" for i in range(1000)]
    train, val = train_val_split(ids, val_fraction=0.1, seed=0)
    assert len(val) == 100 and sorted(train + val) == list(range(1000))
    assert (train, val) == train_val_split(ids, val_fraction=0.1, seed=0)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    _, val2 = train_val_split(shuffled, val_fraction=0.1, seed=0)
    assert {shuffled[i] for i in val2} == {ids[i] for i in val}  # depends on the ids, not their order
    assert train_val_split(ids, val_fraction=0.1, seed=1)[1] != val
    assert train_val_split(["a", "b"], val_fraction=0.01) in (([0], [1]), ([1], [0]))  # at least one each side
    assert train_val_split(ids, val_fraction=0.0) == (list(range(1000)), [])
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(ids, val_fraction=1.0)
    with pytest.raises(ValueError, match="unique"):
        train_val_split(["a", "a"])
