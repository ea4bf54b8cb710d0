"""Write one benchmark's section of benchmarks/RESULTS.md without touching the others.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
``paired_demo_runs`` pairs the runs of two finished demo folders (a variant against the demo).
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from echo_vlsm.io import write_text_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each owns its section.\n"


def machine() -> str:
    """One line naming the hardware the numbers were measured on."""
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        dev = f"CPU only ({cpu}, {torch.get_num_threads()} threads)"
    return f"{dev}; torch {torch.__version__}; Python {platform.python_version()}"


def update_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {name}:start -->\n{markdown.strip()}\n<!-- {name}:end -->"
    key = re.escape(name)
    pattern = re.compile(rf"<!-- {key}:start -->.*?<!-- {key}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(path, text)


def paired_demo_runs(a: Path, b: Path, patterns: tuple[str, ...] = ("*",)
                     ) -> Iterator[tuple[Path, Path, float, float]]:
    """The runs of two finished demo folders (``<folder>/runs/demo/<run id>``) that both
    scored, matched by run id and ordered by ``patterns`` then name: (A's run folder, B's,
    A's mean test dice, B's)."""
    import pandas as pd

    for pattern in patterns:
        for run in sorted((a / "runs/demo").glob(pattern)):
            other = b / "runs/demo" / run.name
            if (run / "metrics.csv").exists() and (other / "metrics.csv").exists():
                yield (run, other, *(float(pd.read_csv(d / "metrics.csv")["dice"].mean())
                                     for d in (run, other)))
