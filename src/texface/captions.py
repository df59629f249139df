"""The CelebA-Dialog attributes shared by every world: levels, priors, and the caption grammar.

Six attributes: gender (0 female, 1 male), and smiling, bangs, eyeglasses, beard, age with degrees 0..5. The code-level
synthetic world (:mod:`scd.synthetic`) and the face world (:mod:`faceworld`) draw levels from the same priors and
describe them with the same grammar, so :func:`parse`, the captions and attribute accuracy carry over between them.

Captions come from varied templates and synonyms ("bangs"/"fringe", "glasses"/"eyeglasses"/"spectacles",
"smiling"/"grinning", degree words "no", "slight", "thick", "a lot of", ...). Each attribute is mentioned with
probability ``p_mention`` (gender ``p_gender``); women never have a beard (level 0) and their captions never mention
one. :func:`parse` is the exact inverse of the templates: it returns the levels a caption states.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

ATTRIBUTES = ("gender", "smiling", "bangs", "eyeglasses", "beard", "age")
NUM_LEVELS = {"gender": 2, "smiling": 6, "bangs": 6, "eyeglasses": 6, "beard": 6, "age": 6}
GENDER_WORDS = ("female", "male")

# Level priors. A degree attribute is absent (level 0) half of the time; age is uniform; beard is this prior for
# men and always 0 for women.
_DEGREE_PRIOR = (0.5, 0.1, 0.1, 0.1, 0.1, 0.1)
LEVEL_PRIORS = {"gender": (0.5, 0.5), "smiling": _DEGREE_PRIOR, "bangs": _DEGREE_PRIOR,
                "eyeglasses": _DEGREE_PRIOR, "beard": _DEGREE_PRIOR, "age": (1 / 6,) * 6}

# Phrase vocabulary, per attribute and level. "np" phrases are noun phrases that fit "has ...", "with ..." and
# (eyeglasses) "wears ..."; "vp" phrases are whole verb phrases; age "pp" phrases ("in {pos} thirties") fit both
# "is ..." and "A man ...". {pos} is his / her / their. parse() searches for exactly these phrases.
PHRASES: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "smiling": {
        "np": (("no smile", "a neutral expression", "a serious expression"),
               ("a faint smile", "a hint of a smile", "a very slight smile"),
               ("a slight smile", "a small smile", "a gentle smile"),
               ("a smile", "a grin"),
               ("a big smile", "a broad smile", "a wide grin"),
               ("a huge grin", "a beaming smile", "an open-mouthed laugh")),
        "vp": (("is not smiling", "isn't smiling", "looks serious"),
               ("is barely smiling",),
               ("is smiling slightly", "is smiling a little"),
               ("is smiling", "is grinning"),
               ("is smiling broadly", "is grinning widely"),
               ("is laughing", "is beaming", "is grinning from ear to ear")),
    },
    "bangs": {
        "np": (("no bangs", "no fringe"),
               ("very short bangs", "a very short fringe", "a hint of bangs"),
               ("short bangs", "a short fringe", "slight bangs"),
               ("bangs", "a fringe", "medium bangs"),
               ("long bangs", "a long fringe", "thick bangs", "a lot of bangs"),
               ("very long bangs", "a very long fringe", "bangs covering the eyes", "a fringe covering the eyes")),
        "vp": ((), (), (), (), (), ()),
    },
    "eyeglasses": {
        "np": (("no glasses", "no eyeglasses", "no spectacles"),
               ("rimless glasses", "rimless spectacles", "barely visible glasses"),
               ("thin glasses", "thin-framed glasses", "thin-rimmed spectacles", "light eyeglasses"),
               ("glasses", "eyeglasses", "spectacles"),
               ("thick glasses", "thick-framed glasses", "heavy spectacles", "thick-rimmed eyeglasses"),
               ("sunglasses", "dark sunglasses", "very thick glasses", "tinted glasses")),
        "vp": (("does not wear glasses", "doesn't wear glasses", "is not wearing glasses"), (), (), (), (), ()),
    },
    "beard": {
        "np": (("no beard", "a clean-shaven face", "no facial hair"),
               ("light stubble", "a hint of stubble", "a very short beard"),
               ("stubble", "a short beard", "a slight beard"),
               ("a beard", "a medium beard"),
               ("a thick beard", "a full beard", "a lot of beard"),
               ("a very thick beard", "a very long beard", "a huge beard", "a bushy beard")),
        "vp": (("is clean-shaven",), (), (), (), (), ()),
    },
    "age": {
        "pp": (("in {pos} teens",), ("in {pos} twenties",), ("in {pos} thirties",), ("in {pos} forties",),
               ("in {pos} fifties", "in {pos} sixties"), ("in {pos} seventies",)),
        "vp": (("is a teenager", "is very young"), ("is young",), (), ("is middle-aged",), (),
               ("is elderly", "is old")),
    },
}
SUBJECTS = {"male": ("This man", "The man", "This gentleman", "He", "This guy"),
            "female": ("This woman", "The woman", "This lady", "She"),
            None: ("This person", "The person", "This individual")}
NOUNS = {"male": ("man", "gentleman", "guy"), "female": ("woman", "lady"), None: ("person",)}
PRONOUNS = {"male": ("He",), "female": ("She",), None: ("The person", "This person")}
POSSESSIVES = {"male": "his", "female": "her", None: "their"}
_GENDER_RE = {1: re.compile(r"\b(man|men|gentleman|guy|male|he|his|him)\b"),
              0: re.compile(r"\b(woman|women|lady|female|she|her)\b")}


def _build_parser() -> tuple[re.Pattern, dict[str, tuple[str, int]]]:
    table: dict[str, tuple[str, int]] = {}
    for attr, kinds in PHRASES.items():
        for by_level in kinds.values():
            for level, phrases in enumerate(by_level):
                for phrase in phrases:
                    assert phrase not in table, f"phrase {phrase!r} is used twice"
                    table[phrase] = (attr, level)
    # Longest first, so "very long bangs" wins over "long bangs" and "bangs" at the same position.
    alternatives = [re.escape(p).replace(re.escape("{pos}"), "(?:his|her|their)")
                    for p in sorted(table, key=len, reverse=True)]
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b"), table


_PHRASE_RE, _PHRASE_TABLE = _build_parser()
_POSSESSIVE_RE = re.compile(r"\b(?:his|her|their)\b")


def parse(caption: str) -> dict[str, int]:
    """The attribute levels a caption states, e.g. {'gender': 1, 'beard': 3}; unmentioned attributes are absent.

    Matching is case-insensitive over the world's phrase vocabulary. An attribute stated twice with different
    levels (or a caption naming both genders) is ambiguous and left out.
    """
    text = " ".join(caption.lower().replace("\u2019", "'").split())
    found: dict[str, set[int]] = {}
    for match in _PHRASE_RE.finditer(text):
        attr, level = _PHRASE_TABLE[_POSSESSIVE_RE.sub("{pos}", match.group(0))]
        found.setdefault(attr, set()).add(level)
    genders = {g for g, pattern in _GENDER_RE.items() if pattern.search(text)}
    if genders:
        found["gender"] = genders
    return {a: next(iter(found[a])) for a in ATTRIBUTES if a in found and len(found[a]) == 1}


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    comma = "," if rng.random() < 0.3 else ""  # the Oxford comma, sometimes
    return ", ".join(parts[:-1]) + f"{comma} and " + parts[-1]


def describe(levels: dict[str, int], rng: random.Random, *, p_mention: float = 0.5, p_gender: float = 0.8) -> str:
    """One random caption of a face with the given levels (all six attributes).

    Each attribute is mentioned with probability ``p_mention`` (gender ``p_gender``; a beard never for women); at
    least one attribute is always mentioned. ``parse(describe(levels, rng))`` returns exactly the mentioned levels.
    """
    gender_word = GENDER_WORDS[levels["gender"]]
    eligible = [a for a in ATTRIBUTES[1:] if not (a == "beard" and gender_word == "female")]
    mentioned = [a for a in eligible if rng.random() < p_mention]
    gender = gender_word if rng.random() < p_gender else None
    if not mentioned and gender is None:
        mentioned = [rng.choice(eligible)]
    rng.shuffle(mentioned)
    pos = POSSESSIVES[gender]
    form = rng.randrange(3)  # 0: one sentence, 1: two sentences, 2: "A man in his forties with ..."
    nps, vps, age_pp = [], [], None
    for attr in mentioned:
        level = levels[attr]
        kinds = PHRASES[attr]
        if attr == "age":
            vp_choices = kinds["vp"][level]
            if form == 2 or not vp_choices or rng.random() < 0.6:
                age_pp = rng.choice(kinds["pp"][level]).format(pos=pos)
                if form != 2:
                    vps.append("is " + age_pp)
            else:
                vps.append(rng.choice(vp_choices))
            continue
        vp_choices = kinds["vp"][level]
        if form != 2 and vp_choices and rng.random() < 0.4:
            vps.append(rng.choice(vp_choices))
        elif form != 2 and attr == "eyeglasses" and rng.random() < 0.5:
            vps.append(rng.choice(("wears ", "is wearing ")) + rng.choice(kinds["np"][level]))
        else:
            nps.append(rng.choice(kinds["np"][level]))
    if form == 2:
        noun = rng.choice(NOUNS[gender])
        text = f"A {noun}" + (f" {age_pp}" if age_pp else "") + (f" with {_join(nps, rng)}" if nps else "")
        return text + "."
    subject = rng.choice(SUBJECTS[gender])
    if not nps and not vps:
        return f"This is a {rng.choice(NOUNS[gender])}."
    if form == 1 and nps and vps:
        return f"{subject} has {_join(nps, rng)}. {rng.choice(PRONOUNS[gender])} {_join(vps, rng)}."
    clauses = ([f"has {_join(nps, rng)}"] if nps else []) + vps
    return f"{subject} {_join(clauses, rng)}."


def sample_levels(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Levels (n,) long per attribute drawn from LEVEL_PRIORS (beard forced to 0 for women)."""
    levels = {a: torch.multinomial(torch.tensor(LEVEL_PRIORS[a]), n, replacement=True, generator=generator)
              for a in ATTRIBUTES}
    levels["beard"] = levels["beard"] * levels["gender"]
    return levels


def caption_lists(rows: dict[str, Sequence[int]], rng: random.Random, *, p_mention: float = 0.5,
                  p_gender: float = 0.8, max_captions: int = 3, p_uncaptioned: float = 0.1) -> list[list[str]]:
    """Captions of n faces whose levels are ``rows[attribute][i]``: a fraction ``p_uncaptioned`` gets none, the
    others 1..``max_captions`` captions from :func:`describe`."""
    n = len(rows[ATTRIBUTES[0]])
    captions = []
    for i in range(n):
        if rng.random() < p_uncaptioned:
            captions.append([])
            continue
        row = {a: int(rows[a][i]) for a in ATTRIBUTES}
        captions.append([describe(row, rng, p_mention=p_mention, p_gender=p_gender)
                         for _ in range(rng.randint(1, max_captions))])
    return captions
