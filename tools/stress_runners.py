"""Several runners on one project folder, round after round: does each job run exactly once?

    python tools/stress_runners.py                       # 30 rounds of 2 or 3 runners
    python tools/stress_runners.py --rounds 50 --runners 3 --sleep 2

Each round makes a fresh micro project (small notebooks standing in for 01, 03, 04 and 06;
each execution appends ``<job> <runner>`` to the project's ``executions.log`` when it starts;
a training run then sleeps ``--sleep`` seconds (03 ``--step-sleep``) and writes a complete
run folder), starts the runners (``pipeline.reproduce`` in separate processes, ``--jobs 1``
each, at random offsets of up to ``--max-offset`` seconds after a common start) and counts
the executions per job. One runner alone on the same project gives the wall time to beat.
A round is right when every job of the graph ran exactly once; the last line sums the rounds
up. Exit status 1 when a round was not right. ``tests/test_runner_stress.py`` runs a few
rounds of the same.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # micro.write_notebook, the tests' notebook writer

from micro import TRAIN_WRITE, write_notebook  # noqa: E402

RECORD = "executions.log"
#: The runs of the test's project: a real run and a synthetic one (which waits for both task
#: files), each below 03, which is below 01.
SMALL_GRID = [{"models": ["clipseg"], "strategies": ["real", "synthetic"], "prompts": ["p1"],
               "encoders": ["trained"]}]
#: The issue's grid: the three CLIPSeg P1 runs (synth-pt-real-ft waits for the synthetic one).
ISSUE_GRID = [{"models": ["clipseg"], "prompts": ["p1"], "encoders": ["trained"],
               "strategies": ["real", "synthetic", "synth-pt-real-ft"]}]

_APPEND = ('import os, time\nwith open(record, "a") as f:\n'
           '    f.write(f"{job} {os.environ.get(\'STRESS_RUNNER\', \'?\')}\\n")\n'
           'time.sleep(sleep)')
_TRAIN = ('import json, pathlib\nroot = pathlib.Path(runs_root)\n'
          'run = f"{model}_{strategy}_{encoders}_{prompt}"\njob = run\n' + _APPEND)

RUNNER = """
import sys, time
from echo_vlsm import pipeline as P
profile, notebooks, root, start = sys.argv[1:5]
time.sleep(max(0.0, float(start) - time.time()))
out = P.reproduce(profile, notebooks_dir=notebooks, root=root)
sys.exit(0 if out.ok else 1)
"""


def make_project(folder: Path, sleep: float, grid: list[dict] | None = None,
                 step_sleep: float = 0.0) -> Path:
    """A micro project in ``folder``: its notebooks (``nbs/``) and profile; returns the
    profile's path. Each run sleeps ``sleep`` s, each part of 03 ``step_sleep`` s; 01 and 06
    take no time beyond their kernel."""
    nbs = folder / "nbs"
    record = str(folder / RECORD)
    write_notebook(nbs / "01_data_preparation.ipynb", 'record = ""\nsleep = 0.0',
                   'job = "01_data_preparation"\n' + _APPEND)
    write_notebook(nbs / "03_prompt_generation.ipynb",
                   'record = ""\nsleep = 0.0\ndatasets = "both"',
                   'job = f"03_prompt_generation:{datasets}"\n' + _APPEND)
    write_notebook(nbs / "04_train_vlsm.ipynb",
                   "\n".join(f'{k} = ""' for k in ("model", "strategy", "encoders", "prompt",
                                                    "runs_root", "record")) + "\nsleep = 0.0",
                   _TRAIN, TRAIN_WRITE)
    write_notebook(nbs / "06_dice_difference_plots.ipynb",
                   'profile = ""\nruns_root = ""\nrecord = ""\nsleep = 0.0',
                   'job = "06_dice_difference_plots"\n' + _APPEND)
    profile = {"profile": "stress", "runs_root": str(folder / "runs" / "stress"),
               "steps": {"01_data_preparation": {"record": record},
                         "03_prompt_generation": {"record": record, "sleep": step_sleep},
                         "06_dice_difference_plots": {"record": record}},
               "train": {"record": record, "sleep": sleep},
               "grid": grid or SMALL_GRID}
    path = folder / "stress.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def graph_jobs(profile: Path, folder: Path) -> list[str]:
    """The names of every job of the project's graph."""
    from echo_vlsm import pipeline as P

    return [j.name for j in P.build_graph(P.load_profile(profile, folder), folder)]


@dataclass
class Round:
    """What one round did: per job, the runners that executed it (from ``executions.log``)."""

    runners: int
    offsets: list[float]
    wall: float
    returncodes: list[int]
    logs: list[str]
    executed: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> Counter:
        return Counter({job: len(by) for job, by in self.executed.items()})

    def by_runner(self) -> Counter:
        return Counter(r for by in self.executed.values() for r in by)

    def right(self, jobs: list[str]) -> bool:
        """Every job of ``jobs`` executed exactly once, nothing else, every runner ended 0."""
        return self.counts() == Counter(dict.fromkeys(jobs, 1)) and not any(self.returncodes)

    def describe(self, jobs: list[str]) -> str:
        counts = self.counts()
        per_job = " ".join(f"{j}={counts.get(j, 0)}" for j in jobs)
        extra = sorted(set(counts) - set(jobs))
        runners = " ".join(f"r{k}:{self.by_runner().get(str(k), 0)}" for k in range(self.runners))
        return (f"{self.runners} runners, offsets {'/'.join(f'{o:.2f}' for o in self.offsets)} s,"
                f" wall {self.wall:.1f} s, rc {self.returncodes}; executions {per_job}"
                + (f" (unknown: {extra})" if extra else "") + f"; by runner {runners}")


def run_round(folder: Path, offsets: list[float], sleep: float, grid: list[dict] | None = None,
              step_sleep: float = 0.0, lead: float = 2.0, timeout: float = 300.0) -> Round:
    """One round in a fresh project at ``folder``: one runner per offset, each starting its
    ``reproduce`` ``offset`` seconds after a common start ``lead`` seconds from now (time for
    the imports); ``wall`` runs from that start until the last runner has ended."""
    profile = make_project(folder, sleep, grid, step_sleep)
    start = time.time() + lead
    procs = []
    for k, offset in enumerate(offsets):
        env = {**os.environ, "STRESS_RUNNER": str(k), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        log = open(folder / f"runner{k}.log", "w")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(profile), str(folder / "nbs"), str(folder),
             repr(start + offset)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
            log))
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, start + timeout - time.time())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        finally:
            log.close()
    wall = time.time() - start
    logs = [(folder / f"runner{k}.log").read_text() for k in range(len(offsets))]
    executed: dict[str, list[str]] = {}
    record = folder / RECORD
    for line in (record.read_text().splitlines() if record.exists() else []):
        job, runner = line.rsplit(" ", 1)
        executed.setdefault(job, []).append(runner)
    return Round(len(offsets), offsets, wall, codes, logs, executed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--runners", default="2,3", help="runners per round, cycled (default 2,3)")
    ap.add_argument("--sleep", type=float, default=3.0, help="seconds each run sleeps")
    ap.add_argument("--step-sleep", type=float, default=0.0, help="seconds each 03 sleeps")
    ap.add_argument("--max-offset", type=float, default=1.0)
    ap.add_argument("--grid", choices=("small", "issue"), default="issue")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--folder", type=Path, default=None, help="default: a new temp folder")
    args = ap.parse_args(argv)
    import tempfile

    folder = args.folder or Path(tempfile.mkdtemp(prefix="stress-runners-"))
    grid = ISSUE_GRID if args.grid == "issue" else SMALL_GRID
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    cycle = [int(n) for n in args.runners.split(",")]
    base = run_round(folder / "one", [0.0], args.sleep, grid, args.step_sleep)
    jobs = graph_jobs(folder / "one" / "stress.yaml", folder / "one")
    print(f"folder {folder}, seed {seed}, {len(jobs)} jobs: {', '.join(jobs)}", flush=True)
    print(f"one runner: {base.describe(jobs)}", flush=True)
    rounds, right, shared, faster = [], 0, 0, 0
    for i in range(args.rounds):
        n = cycle[i % len(cycle)]
        r = run_round(folder / f"round{i:03d}", [rng.uniform(0, args.max_offset)
                                                 for _ in range(n)], args.sleep, grid,
                      args.step_sleep)
        rounds.append(r)
        right += r.right(jobs)
        shared += len(r.by_runner()) >= 2
        faster += r.wall < base.wall
        print(f"round {i + 1}: {'ok ' if r.right(jobs) else 'BAD'} {r.describe(jobs)}",
              flush=True)
    dupes = sum(max(0, c - 1) for r in rounds for c in r.counts().values())
    missing = sum(1 for r in rounds for j in jobs if r.counts().get(j, 0) == 0)
    mean = sum(r.wall for r in rounds) / max(1, len(rounds))
    print(f"SUMMARY: {args.rounds} rounds of {args.runners} runners, {len(jobs)} jobs each: "
          f"every job exactly once in {right}/{args.rounds} rounds ({dupes} duplicate "
          f"executions, {missing} missing); jobs executed by 2+ runners in {shared}/"
          f"{args.rounds}; faster than one runner ({base.wall:.1f} s) in {faster}/{args.rounds}"
          f" (mean {mean:.1f} s); seed {seed}", flush=True)
    return 0 if right == args.rounds and base.right(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
