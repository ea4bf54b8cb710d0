"""Which runs of the study's grid a profile selects, in dependency order, and how they are
shared between machines (``--shard i/n``) or filtered (``--only``).

The study's grid (Synthetic Boost, Tables 1 and 2): 2 models x {real: P0-P7, synthetic:
P0-P6, synth-pt-real-ft: P0-P7} x encoders {trained, frozen}, plus zero-shot per model and
prompt: 108 runs.

Examples::

    >>> len(study_grid())
    108
    >>> [r.id for r in select_grid([{"models": "cris", "strategies": "synth-pt-real-ft",
    ...                              "prompts": "p7", "encoders": "frozen"}])]
    ['cris_synthetic_frozen_p6', 'cris_synth-pt-real-ft_frozen_p7']
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence

from echo_vlsm.grid import (
    ENCODERS,
    MODELS,
    PROMPT_KEYS,
    STRATEGIES,
    STRATEGY_PROMPTS,
    Run,
    pretrain_source,
)
from echo_vlsm.pipeline.errors import ProfileError

GRID_KEYS = {"models", "strategies", "prompts", "encoders"}


def sort_key(run: Run) -> tuple[int, int, int, int]:
    """Dependency order: strategy (zero-shot, synthetic, real, synth-pt-real-ft), then model,
    encoders and prompt in the study's order."""
    return (STRATEGIES.index(run.strategy), MODELS.index(run.model),
            ENCODERS.index(run.encoders), PROMPT_KEYS.index(run.prompt))


def study_grid(zeroshot: bool = True) -> list[Run]:
    """Every run of the study, in dependency order (``sort_key``). Zero-shot trains nothing,
    so it is listed once per model and prompt, with ``encoders="frozen"``; the tables put it
    in Table 1 as the study does."""
    runs = []
    for strategy in STRATEGIES:
        if strategy == "zeroshot" and not zeroshot:
            continue
        encs = ("frozen",) if strategy == "zeroshot" else ENCODERS
        for model in MODELS:
            for encoders in encs:
                for prompt in STRATEGY_PROMPTS[strategy]:
                    runs.append(Run(model, strategy, encoders, prompt))
    return sorted(runs, key=sort_key)


def _as_list(value, allowed: Sequence[str], key: str, path) -> list[str]:
    if value is None or value == "all":
        return list(allowed)
    if isinstance(value, str):
        value = [value]
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ProfileError(path, f"grid {key} {bad} unknown; accepted: {list(allowed)} or 'all'")
    return list(value)


def select_grid(blocks: Iterable[dict], path: str | os.PathLike = "<profile>") -> list[Run]:
    """The runs of the study's grid selected by any of ``blocks`` (each a filter with keys
    models, strategies, prompts, encoders; a missing key or ``all`` means every value), plus
    the synthetic runs they need, in dependency order.

    Raises:
        ProfileError: a block is not a mapping, has an unknown key or an unknown value.
    """
    grid = study_grid()
    chosen: set[Run] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ProfileError(path, f"grid entry {i} is not a mapping of {sorted(GRID_KEYS)}")
        unknown = set(block) - GRID_KEYS
        if unknown:
            raise ProfileError(path, f"grid entry {i}: unknown keys {sorted(unknown)}; "
                                     f"accepted: {sorted(GRID_KEYS)}")
        models = _as_list(block.get("models"), MODELS, "models", path)
        strategies = _as_list(block.get("strategies"), STRATEGIES, "strategies", path)
        prompts = _as_list(block.get("prompts"), PROMPT_KEYS, "prompts", path)
        encoders = _as_list(block.get("encoders"), ENCODERS, "encoders", path)
        for run in grid:
            enc_ok = run.encoders in encoders or run.strategy == "zeroshot"
            if (run.model in models and run.strategy in strategies and run.prompt in prompts
                    and enc_ok):
                chosen.add(run)
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
