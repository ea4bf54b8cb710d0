"""Which runs of the study's grid a profile selects, in dependency order, and how they are
shared between machines (``--shard i/n``) or filtered (``--only``).

The study's grid (Synthetic Boost, Tables 1 and 2): 2 models x {real: P0-P7, synthetic:
P0-P6, synth-pt-real-ft: P0-P7} x encoders {trained, frozen}, plus zero-shot per model and
prompt: 108 runs. Beyond the study, a block may name the ``mixed`` strategy and the ``unet``
baseline (``all`` and a missing key mean the study's values only) and cross its cells with
``seeds``, ``real_fractions`` (for the strategies with real training data) and
``provenance`` (for ``mixed``).

Examples::

    >>> len(study_grid())
    108
    >>> [r.id for r in select_grid([{"models": "cris", "strategies": "synth-pt-real-ft",
    ...                              "prompts": "p7", "encoders": "frozen"}])]
    ['cris_synthetic_frozen_p6', 'cris_synth-pt-real-ft_frozen_p7']
    >>> [r.id for r in select_grid([{"models": "unet", "strategies": "real",
    ...                              "seeds": [0, 1], "real_fractions": [0.5, 1.0]}])]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['unet_real_trained_none', 'unet_real_trained_none_real50', 'unet_real_trained_none_seed1',
     'unet_real_trained_none_seed1_real50']
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence

from echo_vlsm.grid import (
    BASELINE_MODELS,
    BASELINE_STRATEGIES,
    ENCODERS,
    MODELS,
    NO_PROMPT,
    PROMPT_KEYS,
    REAL_DATA_STRATEGIES,
    STRATEGIES,
    STRATEGY_PROMPTS,
    STUDY_STRATEGIES,
    VLSM_MODELS,
    Run,
    pretrain_source,
)
from echo_vlsm.pipeline.errors import ProfileError

GRID_KEYS = {"models", "strategies", "prompts", "encoders", "seeds", "real_fractions",
             "provenance"}
_PROMPT_ORDER = (*PROMPT_KEYS, NO_PROMPT)


def sort_key(run: Run) -> tuple:
    """Dependency order: strategy (zero-shot, synthetic, real, synth-pt-real-ft, mixed), then
    model, encoders and prompt in the study's order, then seed, real fraction (most data
    first) and provenance."""
    return (STRATEGIES.index(run.strategy), MODELS.index(run.model),
            ENCODERS.index(run.encoders), _PROMPT_ORDER.index(run.prompt), run.seed,
            -run.real_fraction, run.provenance)


def study_grid(zeroshot: bool = True) -> list[Run]:
    """Every run of the study, in dependency order (``sort_key``). Zero-shot trains nothing,
    so it is listed once per model and prompt, with ``encoders="frozen"``; the tables put it
    in Table 1 as the study does."""
    runs = []
    for strategy in STUDY_STRATEGIES:
        if strategy == "zeroshot" and not zeroshot:
            continue
        encs = ("frozen",) if strategy == "zeroshot" else ENCODERS
        for model in VLSM_MODELS:
            for encoders in encs:
                for prompt in STRATEGY_PROMPTS[strategy]:
                    runs.append(Run(model, strategy, encoders, prompt))
    return sorted(runs, key=sort_key)


def cells(zeroshot: bool = True) -> list[Run]:
    """Every cell a grid block can select from, at seed 0 with all the data: the study's
    grid, the ``mixed`` strategy (P0-P6, both encoder settings) for the VLSMs, and the
    text-free baselines (prompt ``none``, trained) with their strategies."""
    runs = study_grid(zeroshot)
    for model in VLSM_MODELS:
        for encoders in ENCODERS:
            runs += [Run(model, "mixed", encoders, p) for p in STRATEGY_PROMPTS["mixed"]]
    for model in BASELINE_MODELS:
        runs += [Run(model, s, "trained", NO_PROMPT) for s in BASELINE_STRATEGIES]
    return sorted(runs, key=sort_key)


def _as_list(value, allowed: Sequence, key: str, path, default: Sequence | None = None,
             named: Sequence = ()) -> list:
    """The values of grid key ``key``: ``default`` (else ``allowed``) for a missing key or
    ``all``; ``named`` values are accepted too but only when named."""
    if value is None or value == "all":
        return list(allowed if default is None else default)
    if isinstance(value, (str, int, float, bool)):
        value = [value]
    bad = [v for v in value if v not in allowed and v not in named]
    if bad:
        accepted = [*allowed, *named]
        raise ProfileError(path, f"grid {key} {bad} unknown; accepted: {accepted} or 'all'")
    return list(value)


def _numbers(value, key: str, path, default, check, what: str) -> list:
    """The numbers of grid key ``key`` (``[default]`` when missing), each passing ``check``
    (else an error saying it is not ``what``)."""
    if value is None:
        return [default]
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not check(v):
            raise ProfileError(path, f"grid {key}: {v!r} is not {what}")
    return values


def _expand(cell: Run, seeds, fractions, provenances) -> list[Run]:
    """``cell`` at each seed, real fraction (when its strategy has real training data) and
    provenance setting (when it is a VLSM's mixed run); zero-shot at seed 0 only."""
    seeds = [0] if cell.strategy == "zeroshot" else seeds
    fractions = fractions if cell.strategy in REAL_DATA_STRATEGIES else [1.0]
    provenances = provenances if (cell.strategy == "mixed"
                                  and cell.model in VLSM_MODELS) else [False]
    return [Run(*cell.cell, seed=int(s), real_fraction=float(f), provenance=bool(p))
            for s in seeds for f in fractions for p in provenances]


def select_grid(blocks: Iterable[dict], path: str | os.PathLike = "<profile>") -> list[Run]:
    """The runs selected by any of ``blocks``, plus the synthetic runs they need, in
    dependency order. Each block filters the cells (``cells``) with keys models,
    strategies, prompts, encoders (a missing key or ``all`` means every value of the study:
    ``mixed`` and ``unet`` only when named; a text-free model's prompt is ``none`` and its
    encoders ``trained`` whatever the block says), and crosses them with ``seeds``
    (default ``[0]``), ``real_fractions`` (default ``[1.0]``) and ``provenance`` (default
    ``[false]``).

    Raises:
        ProfileError: a block is not a mapping, has an unknown key or an unknown value.
    """
    grid = cells()
    chosen: set[Run] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ProfileError(path, f"grid entry {i} is not a mapping of {sorted(GRID_KEYS)}")
        unknown = set(block) - GRID_KEYS
        if unknown:
            raise ProfileError(path, f"grid entry {i}: unknown keys {sorted(unknown)}; "
                                     f"accepted: {sorted(GRID_KEYS)}")
        models = _as_list(block.get("models"), MODELS, "models", path, VLSM_MODELS)
        strategies = _as_list(block.get("strategies"), STRATEGIES, "strategies", path,
                              STUDY_STRATEGIES)
        prompts = _as_list(block.get("prompts"), PROMPT_KEYS, "prompts", path,
                           named=(NO_PROMPT,))
        encoders = _as_list(block.get("encoders"), ENCODERS, "encoders", path)
        seeds = _numbers(block.get("seeds"), "seeds", path, 0,
                         lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
        fractions = _numbers(block.get("real_fractions"), "real_fractions", path, 1.0,
                             lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        provenances = _as_list(block.get("provenance"), (False, True), "provenance", path,
                               (False,))
        for run in grid:
            text_free = run.model in BASELINE_MODELS
            enc_ok = run.encoders in encoders or run.strategy == "zeroshot" or text_free
            if (run.model in models and run.strategy in strategies
                    and (run.prompt in prompts or text_free) and enc_ok):
                chosen.update(_expand(run, seeds, fractions, provenances))
    return with_dependencies(chosen)


def with_dependencies(runs: Iterable[Run]) -> list[Run]:
    """``runs`` plus the synthetic runs their synth-pt-real-ft runs start from, ordered."""
    out = set(runs)
    out.update(d for d in map(pretrain_source, list(out)) if d is not None)
    return sorted(out, key=sort_key)


def components(runs: Sequence[Run]) -> list[list[Run]]:
    """Group ``runs`` so that a synthetic run and the runs that start from it are together;
    groups come in the order of their first run in ``runs``."""
    index = {r: i for i, r in enumerate(runs)}
    parent = list(range(len(runs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in runs:
        dep = pretrain_source(r)
        if dep in index:
            parent[find(index[r])] = find(index[dep])
    groups: dict[int, list[Run]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(find(i), []).append(r)
    return sorted(groups.values(), key=lambda g: index[g[0]])


def shard_runs(runs: Sequence[Run], shard: tuple[int, int]) -> list[Run]:
    """The runs of shard ``i`` of ``n`` (1-based): dependency groups assigned greedily, largest
    first, to the least loaded shard (ties to the lowest). Deterministic, disjoint, covering,
    and a synth-pt-real-ft run always shares a shard with its synthetic run."""
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise ValueError(f"shard {i}/{n}: expected i/n with 1 <= i <= n")
    groups = components(runs)
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), g))
    load = [0] * n
    mine: set[Run] = set()
    for g in order:
        target = min(range(n), key=lambda s: (load[s], s))
        load[target] += len(groups[g])
        if target == i - 1:
            mine.update(groups[g])
    return [r for r in runs if r in mine]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4).

    >>> parse_shard("2/4")
    (2, 4)
    """
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: expected 1 <= i <= n")
    return i, n


def filter_runs(runs: Sequence[Run], patterns: Iterable[str] | None) -> list[Run]:
    """Runs whose id matches any glob in ``patterns`` (all when None or empty)."""
    patterns = [p for p in (patterns or []) if p]
    if not patterns:
        return list(runs)
    return [r for r in runs if any(fnmatch.fnmatchcase(r.id, p) for p in patterns)]
