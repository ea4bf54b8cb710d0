"""One process of ``tests/test_cache_race.py``: ``python cache_race_worker.py DATASET CACHE
WHO SIZES_JSON``. Once started it writes ``<CACHE>/../ready-<WHO>`` and waits for
``<CACHE>/../go``, then loads the dataset's train split at every
size (``b`` in reverse order) with the cache in CACHE, each load first cleaning that folder
(``load_triplets`` -> ``prepare_cache``). Its cache writes linger 30 ms in their temporary file,
as a big split's would (``torch.save`` slowed, nothing else changed), and its cleanings count
the other host's temporary files they meet. Prints a JSON report: the files its cleanings
removed, how many of the other's temporary files they met, a digest per size.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from echo_vlsm import io
from echo_vlsm.train import decoding as D
from echo_vlsm.train import triplets as T

LENGTH = 16


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Character codes, cut or padded to 16 (a tokenizer without the CLIP vocabulary, which
    takes seconds to load)."""
    ids = torch.zeros((len(texts), LENGTH), dtype=torch.long)
    for i, text in enumerate(texts):
        codes = [ord(c) % 50000 for c in text[:LENGTH]]
        ids[i, :len(codes)] = torch.tensor(codes, dtype=torch.long)
    return ids, (ids > 0).long()


def digest(data: T.Triplets) -> str:
    """SHA-256 of a split's decoded images, masks and tokens."""
    parts = (data.images, data.masks, data.input_ids)
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in parts)).hexdigest()


def main(dataset: Path, cache: Path, me: str, sizes: list[int]) -> dict:
    save, clean = torch.save, D.clean_temp_files
    report: dict = {"removed": [], "seen": 0, "digests": {}}

    def slow_save(obj, f) -> None:
        save(obj, f)
        time.sleep(0.03)

    def counting_clean(folder):
        others = [p for p in Path(folder).glob(".*.tmp")
                  if (m := io.TEMP_PATTERN.match(p.name)) and m["host"] != io.host_tag()]
        report["seen"] += len(others)
        removed = clean(folder)
        report["removed"] += [p.name for p in removed]
        return removed

    torch.save, D.clean_temp_files = slow_save, counting_clean
    (cache.parent / f"ready-{me}").touch()
    while not (cache.parent / "go").exists():
        time.sleep(0.005)
    for size in (sizes if me == "a" else sizes[::-1]):
        data = T.load_triplets(dataset, "train", "p2", size, tokenize, cache_dir=cache,
                               progress=False)
        report["digests"][str(size)] = digest(data)
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3],
                          json.loads(sys.argv[4]))))
