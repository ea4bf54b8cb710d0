"""The three cardiac structures segmented in the study and their label values.

CAMUS label maps use 0 background, 1 left-ventricular cavity, 2 myocardium, 3 left atrium.
Everywhere in the project a structure is named by its short key.

Examples::

    >>> LABELS["myo"]
    2
    >>> STRUCTURE_NAMES["la"]
    'Left atrium cavity'
"""

STRUCTURES: tuple[str, ...] = ("lv", "myo", "la")
LABELS: dict[str, int] = {"lv": 1, "myo": 2, "la": 3}
# The study's wording of each structure in its prompts (Synthetic Boost task files).
STRUCTURE_NAMES: dict[str, str] = {
    "lv": "Left ventricular cavity",
    "myo": "Myocardium",
    "la": "Left atrium cavity",
}
VIEWS: tuple[str, ...] = ("2CH", "4CH")
PHASES: tuple[str, ...] = ("ED", "ES")
SPLITS: tuple[str, ...] = ("train", "val", "test")
QUALITIES: tuple[str, ...] = ("Good", "Medium", "Poor")
MAX_LABEL = 3


def check_structure(structure: str) -> str:
    """Return ``structure`` if it is a known key, else raise a ValueError listing the keys."""
    if structure not in LABELS:
        raise ValueError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")
    return structure
