"""Where a finished demo's wall time went: its jobs' seconds against the two floors of the pool.

Reads the last entries of `demo` and `demo-beyond` in a project folder's
`runs/demo/reproduce_timings.jsonl` (the runner's own job seconds) and, with the profiles'
graphs, computes what `echo_vlsm.pipeline.timeline` computes at the end of a call: the busy
seconds shared by the workers and the critical path (the longest chain of jobs that wait for
one another). A target below both floors cannot be met by scheduling, only by shorter jobs
on the chain or fewer job-seconds. Also: the wall time with more workers never drops below
the chain (the floor for 1, 2, 4 and unlimited workers).

    python benchmarks/demo_timeline.py /path/to/finished/project [--no-write]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from benchmarks.demo_beyond import last_entry  # noqa: E402
from echo_vlsm.pipeline.graph import build_graph  # noqa: E402
from echo_vlsm.pipeline.profiles import load_profile  # noqa: E402
from echo_vlsm.pipeline.timeline import timeline  # noqa: E402

TITLE = "## Where a demo's wall time went (`benchmarks/demo_timeline.py`)"


def rows(folder: Path, profile: str) -> tuple[dict, list[str]]:
    entry = last_entry(folder / "runs" / "demo" / "reproduce_timings.jsonl", profile)
    seconds = entry["seconds"]
    workers = int(entry.get("workers") or 2)  # older entries: `make demo`'s --jobs 2
    graph = build_graph(load_profile(profile, folder), folder)
    t = timeline(graph, seconds, workers)
    ran = [n for n in seconds if n != "total"]
    row = {"profile": profile, "when": entry.get("time", "?"), "jobs": len(ran),
           "wall": entry["total_seconds"],
           "busy": t.busy, "workers": workers, "chain": t.chain_seconds,
           **{f"floor{n}": replace(t, workers=n).floor for n in (1, 2, 4)}}
    steps = [f"{n} {seconds[n]:.0f} s" for n in t.chain]
    return row, steps


def report(folder: Path, profiles: list[str]) -> str:
    lines = [TITLE, "",
             f"Machine: {machine()}. The runner's job seconds of the last call of each profile "
             f"in `{folder}` "
             "(the wall time is the call's own; jobs done by an earlier call are not in it). "
             "Floors: the busy seconds over the workers, and the critical path, which no "
             "number of workers shortens.", "",
             "| profile | finished | jobs run | wall s | job-seconds | workers | "
             "busy / workers s | critical path s | floor, 1 / 2 / 4 workers s |",
             "|---|---|---|---|---|---|---|---|---|"]
    chains = []
    for profile in profiles:
        r, steps = rows(folder, profile)
        lines.append(f"| {profile} | {r['when']} | {r['jobs']} | {r['wall']:.0f} | "
                     f"{r['busy']:.0f} | {r['workers']} | {r['busy'] / r['workers']:.0f} | "
                     f"{r['chain']:.0f} | "
                     f"{r['floor1']:.0f} / {r['floor2']:.0f} / {r['floor4']:.0f} |")
        chains.append(f"- {profile}'s critical path: " + " -> ".join(steps) + ".")
    return "\n".join([*lines, "", *chains])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a project folder where the demo ran")
    ap.add_argument("--profiles", nargs="+", default=["demo", "demo-beyond"])
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    text = report(args.folder.resolve(), args.profiles)
    print(text)
    if not args.no_write:
        update_section("demo_timeline", text)


if __name__ == "__main__":
    main()
