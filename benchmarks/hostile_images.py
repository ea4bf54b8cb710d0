"""Peak memory of reading a decompression-bomb PNG: a valid 30,000 x 30,000 8-bit gray PNG of
about 4 MB (900 MB of pixels once decoded), given to ``read_image``, which ``echo-vlsm segment``
calls on every image (issue 23, sec. 4).

Each reading runs in a fresh process that first imports ``echo_vlsm.inference`` (torch and
all, as ``segment`` does); the process's peak RSS (``ru_maxrss``) is read at its end, next to
its RSS after the imports. The last row decodes the same file with ``cv2.imdecode``, the reader
``read_image`` used before this check. Limit: the bomb must leave the process under 1 GiB.

    python benchmarks/hostile_images.py          # writes the hostile_images section
    python benchmarks/hostile_images.py --side 20000 --no-write
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.hostile_files import write_png_bomb  # noqa: E402  (the tests' hostile files)

GIB = 1024**3

CHILD = """
import json, resource, sys, time
import numpy as np
import echo_vlsm.inference
from echo_vlsm.inference import ImageError, read_image

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

after_import = rss_kb()
t = time.perf_counter()
how, path = sys.argv[1], sys.argv[2]
try:
    if how == "cv2":
        import cv2
        array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        outcome = f"decoded: {array.shape[1]} x {array.shape[0]} {array.dtype}"
    else:
        array = read_image(path)
        outcome = f"read: {array.shape[1]} x {array.shape[0]}"
except ImageError as err:
    outcome = "refused: " + err.problem
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "after_import_kb": after_import, "peak_kb": peak,
                  "seconds": seconds}))
"""


def measure(how: str, path: Path) -> dict:
    """One reading in a fresh process: its outcome, RSS after the imports and peak RSS."""
    proc = subprocess.run([sys.executable, "-c", CHILD, how, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the {how} reading of {path} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=30000, help="the bomb's side (pixels)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write "
                                                               "benchmarks/RESULTS.md")
    parser.add_argument("--skip-cv2", action="store_true", help="skip the old reader's row "
                                                               "(it decodes side^2 bytes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        bomb = write_png_bomb(Path(tmp) / "bomb.png", args.side)
        made = time.perf_counter() - t
        import numpy as np
        from PIL import Image

        frame = Path(tmp) / "frame.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (768, 1024), np.uint8)).save(
            frame)
        rows = [("a 1024 x 768 PNG frame", "read_image", measure("read_image", frame)),
                (f"the bomb, {args.side} x {args.side}", "read_image",
                 measure("read_image", bomb))]
        if not args.skip_cv2:
            rows.append((f"the bomb, {args.side} x {args.side}", "cv2.imdecode (the reader "
                         "before)", measure("cv2", bomb)))
        size_mb = bomb.stat().st_size / 1e6
    lines = ["## Hostile images: a decompression-bomb PNG (`benchmarks/hostile_images.py`)\n",
             f"The bomb: a valid {args.side} x {args.side} 8-bit gray PNG of {size_mb:.1f} MB "
             f"({args.side ** 2 / 1e6:.0f} MB of pixels decoded; written in {made:.1f} s). "
             "Each row: a fresh process that imports `echo_vlsm.inference` (torch included, as "
             "`segment` does), then reads the file. Limit: peak under 1 GiB.\n",
             "| file | reader | outcome | RSS after imports (MiB) | peak RSS (MiB) | seconds |",
             "|---|---|---|---|---|---|"]
    peak_bomb = rows[1][2]["peak_kb"] * 1024
    for name, reader, r in rows:
        outcome = r["outcome"] if len(r["outcome"]) < 90 else r["outcome"][:87] + "..."
        lines.append(f"| {name} | {reader} | {outcome} | {r['after_import_kb'] / 1024:.0f} | "
                     f"{r['peak_kb'] / 1024:.0f} | {r['seconds']:.3f} |")
    lines.append(f"\nThe bomb's peak with `read_image`: {peak_bomb / GIB:.2f} GiB "
                 f"({'under' if peak_bomb < GIB else 'OVER'} the 1 GiB limit).")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import machine, update_section

        update_section("hostile_images", text.replace(
            "Limit: peak under 1 GiB.", f"Limit: peak under 1 GiB. Machine: {machine()}."))
    if peak_bomb >= GIB:
        raise SystemExit("the bomb took the process over 1 GiB")


if __name__ == "__main__":
    main()
