"""The synthetic attribute world: seeded W+ style codes with CelebA-Dialog-style captions, and its metrics.

No real style codes can be downloaded here, so this world is the project's default data and learning benchmark.
A code (flattened to D = 14 * 512) is

    code = w_avg + sum_a strength * v_a * d_a  +  M @ exp  +  identity_std * sum_j z_j * u_j  +  noise_std * eps

with one unit direction d_a per attribute, M = (D, 50) a fixed linear expression effect, u_j an identity subspace of
rank ``identity_rank``, z, exp ~ N(0, 1) (exp scaled by ``exp_std``) and eps ~ N(0, I). The attribute directions,
the expression subspace, the identity subspace and ``probe_dims`` extra directions are mutually orthonormal
(one QR of a seeded Gaussian matrix), so each metric reads its own part of the code exactly.

Every direction repeats one 512-d direction on all 14 layers (scaled by 1/sqrt(14) to unit norm). Real W+ codes
have this structure: EG3D's mapping network gives the same w to every layer, and inverted codes stay close to
that; only the residual noise differs between layers. It also matters for learning: the official denoiser applies
the same weights to every layer token and sees a token's position only through the attention scores, and it
fitted directions drawn independently per layer (an earlier version of this world) much worse
(docs/LEARNING.md).

Attributes (CelebA-Dialog): gender (0 female, 1 male), and smiling, bangs, eyeglasses, beard, age with degrees
0..5. Level k maps to v = 2k / (L - 1) - 1 in [-1, 1] (L = number of levels); reading a code back projects it onto
d_a and inverts that map. Women never have a beard (level 0) and their captions never mention one.

Captions come from varied templates and synonyms ("bangs"/"fringe", "glasses"/"eyeglasses"/"spectacles",
"smiling"/"grinning", degree words "no", "slight", "thick", "a lot of", ...). Each attribute is mentioned with
probability ``p_mention`` (gender ``p_gender``), codes get 1..``max_captions`` captions, and a fraction
``p_uncaptioned`` gets none. ``parse`` is the exact inverse of the templates: it returns the levels a caption
states.

Metrics (see data/README.md for definitions and chance levels): ``attribute_accuracy``, ``expression_error`` and
``frechet_distance`` (over the world's ``features``, a fixed orthonormal projection of the code).

CLI: ``python -m scd.synthetic OUT_DIR --n 5000 --seed 0`` writes a dataset in the format of data/README.md.
"""
from __future__ import annotations

import argparse
import math
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from scd.data import CODE_DIM, EXP_DIM, N_TOKENS, DataFormatError, StyleCodeSet

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


@dataclass
class AttributeScores:
    """Result of ``AttributeWorld.attribute_accuracy``.

    per_attribute: accuracy over the statements about each attribute; counts: number of those statements;
    chance: the accuracy of codes drawn independently of their captions (analytic); mean / chance_mean: their
    averages over the attributes that have statements; mode: 'degree' or 'presence'.
    """

    per_attribute: dict[str, float]
    counts: dict[str, int]
    chance: dict[str, float]
    mean: float
    chance_mean: float
    mode: str

    def as_dict(self, prefix: str = "attr_acc") -> dict[str, float]:
        """Flat {name: value} for loggers: <prefix>/mean, <prefix>/chance, <prefix>/<attribute>."""
        out = {f"{prefix}/mean": self.mean, f"{prefix}/chance": self.chance_mean}
        out.update({f"{prefix}/{a}": v for a, v in self.per_attribute.items()})
        return out


class AttributeWorld:
    """A seeded synthetic world of style codes, captions and expressions (see the module docstring).

    Args:
        seed: seed of the world's directions and expression effect (samples have their own seed).
        w_avg: (512,) or (14, 512) mean code; default zeros.
        strength: norm of an attribute's effect at its extreme levels (v = +-1).
        exp_strength: scale of the expression effect; the gains of the 50 expression components go linearly from
            1.5 to 0.5 times this.
        exp_std: standard deviation of the sampled expression coefficients.
        identity_rank, identity_std: rank and per-component standard deviation of the identity variation.
        noise_std: per-coordinate isotropic residual noise (it sets the metrics' floor on true codes).
        probe_dims: extra fixed random directions in ``features`` (catch off-manifold junk in the Frechet distance).
        p_mention, p_gender: probability that a caption mentions an attribute / the gender.
        max_captions: captions per captioned code are uniform in 1..max_captions.
        p_uncaptioned: fraction of codes without any caption.
    """

    def __init__(self, seed: int = 0, *, w_avg: Sequence[float] | torch.Tensor | None = None,
                 strength: float = 3.0, exp_strength: float = 1.0, exp_std: float = 1.0, identity_rank: int = 32,
                 identity_std: float = 1.0, noise_std: float = 0.02, probe_dims: int = 32, p_mention: float = 0.5,
                 p_gender: float = 0.8, max_captions: int = 3, p_uncaptioned: float = 0.1):
        for name, value in (("strength", strength), ("exp_strength", exp_strength), ("exp_std", exp_std)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (("identity_std", identity_std), ("noise_std", noise_std)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, value in (("p_mention", p_mention), ("p_gender", p_gender), ("p_uncaptioned", p_uncaptioned)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if identity_rank < 0 or probe_dims < 0 or max_captions < 1:
            raise ValueError(f"identity_rank and probe_dims must be >= 0 and max_captions >= 1, got "
                             f"{identity_rank}, {probe_dims} and {max_captions}")
        n_basis = len(ATTRIBUTES) + EXP_DIM + identity_rank + probe_dims
        if n_basis > CODE_DIM:
            raise ValueError(f"identity_rank + probe_dims are too large: the world needs {n_basis} orthonormal "
                             f"directions in {CODE_DIM} dimensions")
        w = torch.zeros(CODE_DIM) if w_avg is None else torch.as_tensor(w_avg, dtype=torch.float32)
        if tuple(w.shape) == (CODE_DIM,):
            w = w.expand(N_TOKENS, CODE_DIM)
        if tuple(w.shape) != (N_TOKENS, CODE_DIM) or not torch.isfinite(w).all():
            raise ValueError(f"w_avg must be a finite (512,) or (14, 512) tensor, got shape {tuple(w.shape)}")
        self.seed, self.strength = int(seed), float(strength)
        self.exp_strength, self.exp_std = float(exp_strength), float(exp_std)
        self.identity_rank, self.identity_std = int(identity_rank), float(identity_std)
        self.noise_std = float(noise_std)
        self.probe_dims, self.p_mention, self.p_gender = int(probe_dims), float(p_mention), float(p_gender)
        self.max_captions, self.p_uncaptioned = int(max_captions), float(p_uncaptioned)
        self._w_avg_arg = None if w_avg is None else w[0].tolist() if (w == w[0]).all() else w.tolist()
        self.w_avg = w.contiguous().clone()  # (14, 512)

        g = torch.Generator().manual_seed(self.seed)
        basis, _ = torch.linalg.qr(torch.randn(CODE_DIM, n_basis, generator=g, dtype=torch.float64))  # (512, K)
        # (K, D) float64, orthonormal rows: attributes | expression | identity | probes. Every direction is the
        # same 512-d direction on all 14 layers, as in real W+ codes (see the module docstring).
        self.basis = (basis.T.unsqueeze(1).expand(n_basis, N_TOKENS, CODE_DIM) / math.sqrt(N_TOKENS)).reshape(
            n_basis, N_TOKENS * CODE_DIM).contiguous()
        n_attr = len(ATTRIBUTES)
        self._exp_rows = slice(n_attr, n_attr + EXP_DIM)
        self._id_rows = slice(n_attr + EXP_DIM, n_attr + EXP_DIM + identity_rank)
        # Expression effect M = Q_exp @ A with A = exp_strength * R diag(gains): a dense, well-conditioned map.
        rot, _ = torch.linalg.qr(torch.randn(EXP_DIM, EXP_DIM, generator=g, dtype=torch.float64))
        gains = torch.linspace(1.5, 0.5, EXP_DIM, dtype=torch.float64)
        self.exp_mix = self.exp_strength * rot * gains  # (50, 50): exp coordinates in the expression subspace
        self.expression_matrix = (self.basis[self._exp_rows].T @ self.exp_mix).float()  # (D, 50)
        self._exp_pinv = torch.linalg.solve(self.exp_mix, self.basis[self._exp_rows])  # (50, D) = pinv(M)
        self._gen_basis = self.basis[: n_attr + EXP_DIM + identity_rank].float()  # (K', D)

    @property
    def config(self) -> dict:
        """The constructor arguments as plain data: ``AttributeWorld(**world.config)`` rebuilds this world."""
        return {"seed": self.seed, "w_avg": self._w_avg_arg, "strength": self.strength,
                "exp_strength": self.exp_strength, "exp_std": self.exp_std, "identity_rank": self.identity_rank,
                "identity_std": self.identity_std, "noise_std": self.noise_std, "probe_dims": self.probe_dims,
                "p_mention": self.p_mention, "p_gender": self.p_gender, "max_captions": self.max_captions,
                "p_uncaptioned": self.p_uncaptioned}

    @property
    def directions(self) -> torch.Tensor:
        """(6, 14, 512) unit attribute directions, in ATTRIBUTES order."""
        return self.basis[: len(ATTRIBUTES)].float().reshape(len(ATTRIBUTES), N_TOKENS, CODE_DIM)

    # ---- sampling -------------------------------------------------------------------------------------------
    def sample_levels(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Levels (n,) long per attribute from LEVEL_PRIORS (beard 0 for women)."""
        levels = {a: torch.multinomial(torch.tensor(LEVEL_PRIORS[a]), n, replacement=True, generator=generator)
                  for a in ATTRIBUTES}
        levels["beard"] = levels["beard"] * levels["gender"]
        return levels

    def codes_for(self, levels: dict[str, torch.Tensor], exps: torch.Tensor,
                  generator: torch.Generator | None = None, *, identity: bool = True) -> torch.Tensor:
        """(n, 14, 512) codes with the given levels and expressions (n, 50); identity and noise drawn from
        ``generator`` (``identity=False`` gives the noiseless mean code of each condition)."""
        n = exps.shape[0]
        values = torch.stack([2.0 * levels[a].double() / (NUM_LEVELS[a] - 1) - 1.0 for a in ATTRIBUTES], 1)
        coeffs = [self.strength * values, exps.double() @ self.exp_mix.T]
        if identity:
            z = torch.randn(n, self.identity_rank, generator=generator, dtype=torch.float64)
            coeffs.append(self.identity_std * z)
        else:
            coeffs.append(torch.zeros(n, self.identity_rank, dtype=torch.float64))
        coeffs = torch.cat(coeffs, 1).float()  # (n, K')
        if identity and self.noise_std > 0:  # in place: 10k codes are 290 MB
            flat = torch.randn(n, N_TOKENS * CODE_DIM, generator=generator).mul_(self.noise_std)
            flat.addmm_(coeffs, self._gen_basis)
        else:
            flat = coeffs @ self._gen_basis  # (n, D)
        return flat.view(n, N_TOKENS, CODE_DIM).add_(self.w_avg)

    def sample(self, n: int, seed: int = 0) -> StyleCodeSet:
        """``n`` codes, expressions and captions; ``meta`` holds the world config, the ground-truth levels
        (meta['labels'][attribute] = list of n ints) and the level names. Deterministic in (world, n, seed)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        g = torch.Generator().manual_seed(int(seed))
        levels = self.sample_levels(n, g)
        exps = self.exp_std * torch.randn(n, EXP_DIM, generator=g)  # (n, 50)
        codes = self.codes_for(levels, exps, g)
        rng = random.Random(int(seed))
        rows = {a: levels[a].tolist() for a in ATTRIBUTES}
        captions = []
        for i in range(n):
            if rng.random() < self.p_uncaptioned:
                captions.append([])
                continue
            row = {a: rows[a][i] for a in ATTRIBUTES}
            captions.append([describe(row, rng, p_mention=self.p_mention, p_gender=self.p_gender)
                             for _ in range(rng.randint(1, self.max_captions))])
        meta = {"source": "scd.synthetic.AttributeWorld", "world": self.config, "sample_seed": int(seed),
                "attributes": {a: NUM_LEVELS[a] for a in ATTRIBUTES}, "labels": rows}
        return StyleCodeSet(codes=codes, expressions=exps, captions=captions,
                            ids=[f"synthetic-{seed}-{i:06d}" for i in range(n)], meta=meta)

    # ---- reading codes back ----------------------------------------------------------------------------------
    def _project(self, codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N, R) float64 coordinates of the centred codes on ``rows`` (R, D); the product runs in float32 (a
        float64 copy of 10k codes would be 570 MB) and the w_avg offset is removed in float64."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (N_TOKENS, CODE_DIM):
            raise ValueError(f"codes must have shape (N, 14, 512), got {tuple(codes.shape)}")
        offset = self.w_avg.double().flatten() @ rows.T  # (R,)
        return (codes.detach().cpu().float().flatten(1) @ rows.float().T).double() - offset

    def read_levels(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Continuous level estimates (N,) float64 per attribute: the projection on d_a mapped back to 0..L-1."""
        values = self._project(codes, self.basis[: len(ATTRIBUTES)]) / self.strength  # (N, 6)
        return {a: (values[:, k] + 1.0) * (NUM_LEVELS[a] - 1) / 2.0 for k, a in enumerate(ATTRIBUTES)}

    def labels_of(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Levels (N,) long per attribute: ``read_levels`` rounded and clipped to the valid range."""
        return {a: v.round().clamp(0, NUM_LEVELS[a] - 1).long() for a, v in self.read_levels(codes).items()}

    def recover_expression(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 50) float64 least-squares expression through the known expression matrix."""
        return self._project(codes, self._exp_pinv)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 6 + 50 + identity_rank + probe_dims) float64: the centred code on the world's orthonormal basis."""
        return self._project(codes, self.basis)

    # ---- metrics ---------------------------------------------------------------------------------------------
    def chance_accuracy(self, mode: str = "degree") -> dict[str, float]:
        """Per-attribute accuracy of codes drawn from the world independently of the captions.

        The stated levels follow the population prior (for beard: the men's prior, as women's captions never
        mention it) and the codes' levels the population marginal; chance = sum_k P(stated k) P(code agrees).
        """
        _check_mode(mode)
        p_male = LEVEL_PRIORS["gender"][1]
        out = {}
        for a in ATTRIBUTES:
            stated = torch.tensor(LEVEL_PRIORS[a], dtype=torch.float64)
            code = stated.clone()
            if a == "beard":
                code = p_male * stated
                code[0] += 1.0 - p_male
            if mode == "presence":
                stated = torch.stack([stated[0], stated[1:].sum()])
                code = torch.stack([code[0], code[1:].sum()])
            out[a] = float((stated * code).sum())
        return out

    def attribute_accuracy(self, codes: torch.Tensor, captions: Sequence[str], *,
                           mode: str = "degree") -> AttributeScores:
        """How often a code agrees with what its caption states.

        For every (code, caption) pair and every attribute the caption states (``parse``), the code's level is
        read back (``labels_of``). mode='degree': the level must equal the stated one (gender: the sign);
        mode='presence': only present (level >= 1) vs absent must agree (gender: the sign). Captions that state
        nothing contribute nothing. Raises ValueError when no caption states anything.
        """
        _check_mode(mode)
        if len(captions) != len(codes):
            raise ValueError(f"got {len(codes)} codes but {len(captions)} captions; pass one caption per code")
        read = self.labels_of(codes)
        hits = {a: 0 for a in ATTRIBUTES}
        counts = {a: 0 for a in ATTRIBUTES}
        for i, caption in enumerate(captions):
            for a, level in parse(caption).items():
                got = int(read[a][i])
                if mode == "presence":
                    got, level = min(got, 1), min(level, 1)
                hits[a] += int(got == level)
                counts[a] += 1
        stated = [a for a in ATTRIBUTES if counts[a]]
        if not stated:
            raise ValueError("none of the captions states a known attribute; use captions in the world's "
                             "vocabulary (e.g. 'This man has a beard.')")
        chance = self.chance_accuracy(mode)
        per = {a: hits[a] / counts[a] for a in stated}
        return AttributeScores(per_attribute=per, counts={a: counts[a] for a in stated},
                               chance={a: chance[a] for a in stated}, mean=sum(per.values()) / len(per),
                               chance_mean=sum(chance[a] for a in stated) / len(stated), mode=mode)

    def expression_error(self, codes: torch.Tensor, exps: torch.Tensor) -> float:
        """RMSE between ``exps`` (N, 50) and the expressions recovered from ``codes`` by least squares."""
        exps = torch.as_tensor(exps)
        if tuple(exps.shape) != (len(codes), EXP_DIM):
            raise ValueError(f"exps must have shape ({len(codes)}, 50), got {tuple(exps.shape)}")
        diff = self.recover_expression(codes) - exps.double().cpu()
        return float(diff.pow(2).mean().sqrt())

    def expression_floor(self) -> float:
        """Expected ``expression_error`` of true (code, expression) pairs: noise_std * sqrt(tr((M^T M)^-1) / 50)."""
        gram = self.exp_mix.T @ self.exp_mix
        return self.noise_std * math.sqrt(float(torch.linalg.inv(gram).trace()) / EXP_DIM)

    def frechet_distance(self, codes_a: torch.Tensor, codes_b: torch.Tensor) -> float:
        """Frechet distance between Gaussian fits of two code sets, over the world's ``features``."""
        return frechet_distance(self.features(codes_a), self.features(codes_b))


def _check_mode(mode: str) -> None:
    if mode not in ("degree", "presence"):
        raise ValueError(f"mode must be 'degree' or 'presence', got {mode!r}")


def _sqrtm_psd(mat: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative eigenvalues,
    which only come from rounding, are clipped to 0)."""
    vals, vecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor,
                              cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), in float64.

    (C1^1/2 C2 C1^1/2)^1/2 is symmetric PSD and has the same trace as (C1 C2)^1/2, so two symmetric
    eigendecompositions give the trace without a general (non-symmetric) matrix square root.
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(x).double() for x in (mu1, mu2, cov1, cov2))
    root1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2.0 * cross)


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits (mean, unbiased covariance) of two samples (N, d) and (M, d)."""
    x, y = torch.as_tensor(x).double().flatten(1), torch.as_tensor(y).double().flatten(1)
    if x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"need two samples of >= 2 rows with the same dimension, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    return gaussian_frechet_distance(x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1),
                                     y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd.synthetic",
                                     description="Write a synthetic style-code dataset (data/README.md format).")
    parser.add_argument("out_dir", type=Path, help="dataset directory to write (replaced if it is a dataset)")
    parser.add_argument("--n", type=int, default=5000, help="number of codes (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the world's directions (default 0)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.exit(2, f"error: --n must be >= 1, got {args.n}\n")
    try:
        data = AttributeWorld(args.world_seed).sample(args.n, seed=args.seed)
        data.save(args.out_dir)
    except (DataFormatError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    n_captions = sum(len(c) for c in data.captions)
    print(f"wrote {args.n} codes with {n_captions} captions to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
