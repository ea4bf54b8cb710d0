"""The study's text prompts P0..P7 from an image's attributes (Synthetic Boost, Sec. 2.2).

Each prompt adds one attribute to the previous one: P1 the structure, P2 the view, P3 the
cardiac phase, P4 the sex, P5 the age in words, P6 the image quality, P7 the shape. Every
prompt comes in the study's two phrasings, "... of the heart." and "... in the cardiac
ultrasound.", one of which is drawn at random per sample during training.

Synthetic images (SDM) have no image-quality label: their P6 carries the shape instead and
they have no P7. The wording is the study's, quirks included ("a eighty-four-year-old",
"one hundred-year-old"), so that task files compare one to one with the original ones.

Examples::

    >>> p = make_prompts(Attributes("lv", "2CH", "ED", "M", 73, "Good", "oval"))
    >>> p["p7"][0]  # doctest: +NORMALIZE_WHITESPACE
    'Left ventricular cavity of oval shape in two-chamber view of the heart at end of the
    diastole cycle of a seventy-three-year-old male with good image quality.'
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from echo_vlsm.grid import PROMPT_KEYS, SYNTHETIC_PROMPT_KEYS
from echo_vlsm.structures import PHASES, QUALITIES, STRUCTURE_NAMES, STRUCTURES, VIEWS

KINDS: tuple[str, ...] = ("camus", "synthetic")
SEXES: tuple[str, ...] = ("M", "F")

# The study's two phrasings: where the structure is seen.
PLACES: tuple[str, ...] = ("of the heart", "in the cardiac ultrasound")
VIEW_WORDS: dict[str, str] = {"2CH": "two-chamber", "4CH": "four-chamber"}
CYCLE_WORDS: dict[str, str] = {"ED": "diastole", "ES": "systole"}
SEX_WORDS: dict[str, str] = {"M": "male", "F": "female"}

# Which attributes each prompt needs (beyond structure, view and phase, always present).
_NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "camus": {"p4": ("sex",), "p5": ("sex", "age"), "p6": ("sex", "age", "quality"),
              "p7": ("sex", "age", "quality", "shape")},
    "synthetic": {"p4": ("sex",), "p5": ("sex", "age"), "p6": ("sex", "age", "shape")},
}


@dataclass(frozen=True)
class Attributes:
    """What the prompts of one (image, structure) pair describe.

    Args:
        structure: ``lv`` | ``myo`` | ``la`` (``echo_vlsm.structures``).
        view: ``2CH`` | ``4CH``. phase: ``ED`` | ``ES``.
        sex: ``M`` | ``F``; age: whole years; quality: ``Good`` | ``Medium`` | ``Poor``
            (as in CAMUS ``Info_*.cfg``); shape: a word (``shape_of``). ``None`` = unknown.
    """

    structure: str
    view: str
    phase: str
    sex: str | None = None
    age: int | None = None
    quality: str | None = None
    shape: str | None = None

    def __post_init__(self):
        _check_choice("structure", self.structure, STRUCTURES)
        _check_choice("view", self.view, VIEWS)
        _check_choice("phase", self.phase, PHASES)
        if self.sex is not None:
            _check_choice("sex", self.sex, SEXES)
        if self.quality is not None:
            _check_choice("quality", self.quality, QUALITIES)
        if self.age is not None:
            age = self.age
            if isinstance(age, numbers.Real) and not isinstance(age, (bool, numbers.Integral)):
                age = int(age) if float(age).is_integer() else age
            if isinstance(age, bool) or not isinstance(age, numbers.Integral):
                raise ValueError(
                    f"Attributes.age is {self.age!r}; expected a whole number of years "
                    "(0-150) or None"
                )
            if not 0 <= int(age) <= 150:
                raise ValueError(f"Attributes.age is {self.age!r}; expected 0-150 years or None")
            object.__setattr__(self, "age", int(age))
        if self.shape is not None:
            if not isinstance(self.shape, str) or not self.shape.strip() or "\n" in self.shape:
                raise ValueError(
                    f"Attributes.shape is {self.shape!r}; expected a non-empty word on one line "
                    "(e.g. circle, oval, triangle, square, rectangle) or None"
                )
            object.__setattr__(self, "shape", self.shape.strip())


def _check_choice(field: str, value, accepted: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"Attributes.{field} is {value!r}; expected one of {list(accepted)}")


def age_words(age: int) -> str:
    """``73 -> "seventy-three-year-old"`` with num2words, as the study wrote ages
    (``100 -> "one hundred-year-old"``)."""
    from num2words import num2words

    return f"{num2words(int(age))}-year-old"


def required_attributes(key: str, kind: str = "camus") -> tuple[str, ...]:
    """Attributes beyond structure, view and phase that prompt ``key`` needs."""
    _check_kind(kind)
    valid = prompt_keys(kind)
    if key not in valid:
        raise ValueError(f"unknown prompt {key!r} for kind {kind!r}; expected one of {list(valid)}")
    return _NEEDS[kind].get(key, ())


def prompt_keys(kind: str = "camus") -> tuple[str, ...]:
    """The prompt keys of a kind: ``p0``..``p7`` (camus) or ``p0``..``p6`` (synthetic)."""
    _check_kind(kind)
    return PROMPT_KEYS if kind == "camus" else SYNTHETIC_PROMPT_KEYS


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {list(KINDS)}")


def phrasings_of(value: str | Sequence[str]) -> list[str]:
    """A prompt's phrasings as a list: a task file holds a list, or one string (P0, or a
    task file of the study with a single phrasing)."""
    return [value] if isinstance(value, str) else list(value)


#: Beyond the study: where an image comes from, said in a prompt (``provenance``, the study's
#: proposed "indicating in the language prompt whether the sample is real or artificial").
#: The one place of this wording.
PROVENANCE_PHRASES: dict[str, str] = {
    "real": "in a real echocardiogram",
    "synthetic": "in a synthetic echocardiogram",
}


def with_provenance(text: str, source: str) -> str:
    """``text`` with the phrase saying its image is ``real`` or ``synthetic``, before its final
    period; the empty prompt (P0) becomes the phrase alone.

    Examples::

        >>> with_provenance("Left atrium cavity of the heart.", "synthetic")
        'Left atrium cavity of the heart in a synthetic echocardiogram.'
        >>> with_provenance("", "real")
        'In a real echocardiogram.'
    """
    if source not in PROVENANCE_PHRASES:
        raise ValueError(f"provenance source {source!r}; expected one of "
                         f"{list(PROVENANCE_PHRASES)}")
    phrase = PROVENANCE_PHRASES[source]
    body = text.strip()
    if not body:
        return f"{phrase[0].upper()}{phrase[1:]}."
    return f"{body[:-1] if body.endswith('.') else body} {phrase}."


def make_prompts(
    attrs: Attributes, kind: str = "camus", keys: Iterable[str] | None = None
) -> dict[str, str | list[str]]:
    """The study's prompts of one (image, structure) pair: ``{"p0": "", "p1": [a, b], ...}``.

    ``kind="camus"``: P1..P7, P6 adding the image quality and P7 the shape.
    ``kind="synthetic"``: P1..P6, P6 adding the shape (synthetic images have no quality);
    a quality in ``attrs`` is then ignored. Each of P1.. is a list of the two phrasings
    ("... of the heart." and "... in the cardiac ultrasound.").
    ``keys`` (default: every prompt of the kind) chooses the prompts to make, in the order
    of ``PROMPT_KEYS``; only their attributes are needed (P1..P3 need none beyond
    structure, view and phase). A needed attribute that is ``None`` raises a ValueError
    naming the first requested prompt that needs it and the attribute(s).
    """
    if not isinstance(attrs, Attributes):
        raise TypeError(f"make_prompts expects an Attributes, got {type(attrs).__name__}")
    _check_kind(kind)
    valid = prompt_keys(kind)
    if keys is None:
        wanted = set(valid)
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        unknown = [k for k in keys if k not in valid]
        if unknown:
            note = " (synthetic prompts end at p6)" if kind == "synthetic" else ""
            raise ValueError(
                f"unknown prompt key(s) {unknown} for kind {kind!r}{note}; "
                f"expected some of {list(valid)}"
            )
        wanted = set(keys)
    for key in valid:
        if key not in wanted:
            continue
        missing = [a for a in _NEEDS[kind].get(key, ()) if getattr(attrs, a) is None]
        if missing:
            hint = (
                " (synthetic images have none: use kind='synthetic')"
                if "quality" in missing
                else ""
            )
            raise ValueError(
                f"prompt {key} ({kind}) needs the attribute(s) {missing}, which are None in "
                f"{attrs}{hint}"
            )

    name = STRUCTURE_NAMES[attrs.structure]
    view = f"in {VIEW_WORDS[attrs.view]} view"
    cycle = f"at end of the {CYCLE_WORDS[attrs.phase]} cycle"
    person = SEX_WORDS.get(attrs.sex, "") if attrs.sex is not None else ""
    age = age_words(attrs.age) if attrs.age is not None else ""
    quality = f" with {attrs.quality.lower()} image quality" if attrs.quality else ""
    shaped = f"{name} of {attrs.shape} shape"

    def phrasings(head: str, tail: str = "") -> list[str]:
        return [f"{head} {place}{tail}." for place in PLACES]

    prompts: dict[str, str | list[str]] = {"p0": ""}
    prompts["p1"] = phrasings(name)
    prompts["p2"] = phrasings(f"{name} {view}")
    prompts["p3"] = phrasings(f"{name} {view}", f" {cycle}")
    prompts["p4"] = phrasings(f"{name} {view}", f" {cycle} of a {person}")
    prompts["p5"] = phrasings(f"{name} {view}", f" {cycle} of a {age} {person}")
    if kind == "camus":
        prompts["p6"] = phrasings(f"{name} {view}", f" {cycle} of a {age} {person}{quality}")
        prompts["p7"] = phrasings(f"{shaped} {view}", f" {cycle} of a {age} {person}{quality}")
    else:
        prompts["p6"] = phrasings(f"{shaped} {view}", f" {cycle} of a {age} {person}")
    return {k: v for k, v in prompts.items() if k in wanted}
