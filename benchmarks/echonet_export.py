"""Speed of the EchoNet-Dynamic reader, ``validate`` and the export on stand-in videos of the
real files' length.

Writes ``--videos`` stand-in videos in EchoNet-Dynamic's layout: each repeats one simulated
phantom cycle (``simulate_video``) to ``--min-frames``..``--max-frames`` frames (the public
videos hold several cycles, on the order of 100-200 frames), FFV1 AVI, 112 x 112, with the
phantom's tracings placed in the last full cycle (so the export decodes deep into the file).
Then times ``read_echonet`` (tables), ``validate`` (decodes every video) and
``export_echonet`` at ``--size`` per number of workers, and extrapolates to the 10,030
videos of the full set.

    python benchmarks/echonet_export.py --videos 24 --workers 1,2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.data.echonet import read_echonet, validate  # noqa: E402
from echo_vlsm.data.echonet_export import export_echonet  # noqa: E402
from echo_vlsm.data.phantom.echonet import simulate_video, write_video  # noqa: E402

FULL_SET = 10_030


def write_standins(root: Path, n: int, lo: int, hi: int, seed: int = 0) -> float:
    """``n`` stand-in videos under ``root``; returns their mean number of frames."""
    v = simulate_video(seed, 1)
    cycle, rng = v["frames"], np.random.default_rng(seed)
    files = ["FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"]
    traces = ["FileName,X1,Y1,X2,Y2,Frame"]
    lengths = []
    for i in range(n):
        name = f"0XSTANDIN{i:09d}"
        length = int(rng.integers(lo, hi + 1))
        frames = np.resize(cycle, (length, *cycle.shape[1:]))
        write_video(root / "Videos" / f"{name}.avi", frames)
        last = (length - 1) // len(cycle) * len(cycle)  # first frame of the last cycle
        shift = last if last + max(v["ed"], v["es"]) < length else last - len(cycle)
        split = ("TRAIN", "VAL", "TEST")[i % 3]
        files.append(f"{name},55.0,40.0,90.0,112,112,50,{length},{split}")
        for phase in ("ED", "ES"):
            axis, chords = v["traces"][phase]
            for row in [axis, *chords]:
                traces.append(",".join([f"{name}.avi", *(f"{c:.4f}" for c in row),
                                        str(v[phase.lower()] + shift)]))
        lengths.append(length)
    (root / "FileList.csv").write_text("\n".join(files) + "\n")
    (root / "VolumeTracings.csv").write_text("\n".join(traces) + "\n")
    return float(np.mean(lengths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--min-frames", type=int, default=100)
    ap.add_argument("--max-frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "echonet"
        t0 = time.perf_counter()
        mean_len = write_standins(root, args.videos, args.min_frames, args.max_frames)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        videos = read_echonet(root)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        problems = validate(root)
        t_validate = time.perf_counter() - t0
        assert problems == [], problems
        rows, cpu_line = [], ""
        for w in [int(x) for x in args.workers.split(",")]:
            out = Path(tmp) / f"out{w}"
            t0, c0 = time.perf_counter(), time.process_time()
            export_echonet(videos, out, size=args.size, workers=w)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rate = args.videos / dt
            rows.append((w, dt, rate, FULL_SET / rate / 60))
            if w <= 1:  # in this process: its CPU time is the work, whatever the load
                cpu_line = (f"- export CPU time in one process: {cpu / args.videos * 1000:.0f} ms "
                            f"per video; 10,030 videos: {FULL_SET * cpu / args.videos / 60:.1f} "
                            "CPU minutes")
            shutil.rmtree(out)
    lines = [
        "## EchoNet-Dynamic reader and export (`benchmarks/echonet_export.py`)",
        "",
        f"Machine: {machine()}. {args.videos} stand-in videos, 112 x 112 FFV1, "
        f"{args.min_frames}-{args.max_frames} frames (mean {mean_len:.0f}), tracings in the "
        f"last cycle; export of ED and ES at {args.size} x {args.size}.",
        "",
        f"- writing the stand-ins: {t_write:.1f} s (one phantom cycle simulated, then tiled)",
        f"- `read_echonet` (tables, no decoding): {t_read * 1000:.0f} ms "
        f"({t_read / args.videos * 1000:.1f} ms per video)",
        f"- `validate` (decodes every video): {t_validate:.2f} s "
        f"({args.videos / t_validate:.0f} videos/s; 10,030 videos: "
        f"{FULL_SET / (args.videos / t_validate) / 60:.1f} min)",
        cpu_line,
        f"- load average while measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "",
        "| workers | export s | videos/s | 10,030 videos (min) |",
        "|---|---|---|---|",
        *(f"| {w} | {dt:.2f} | {rate:.1f} | {full:.1f} |" for w, dt, rate, full in rows),
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("echonet_export", text)


if __name__ == "__main__":
    main()
