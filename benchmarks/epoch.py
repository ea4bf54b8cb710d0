"""One training epoch end to end: the study's input pipeline against the project's engine.

* study:   a ``Dataset`` that per sample reads the image and mask PNGs (OpenCV), resizes them,
           normalises the image and tokenizes a randomly chosen phrasing, in a ``DataLoader``
           with 4 worker processes; the study's step (fp16 autocast + GradScaler on a GPU,
           eager, AdamW for-each; fp32 on a CPU).
* project: ``echo_vlsm.train.triplets`` (decoded, resized and tokenized once, cached on disk,
           uint8 tensors on the device, normalised per batch on the device) and the training
           step of ``echo_vlsm.train`` (bf16 where supported, channels_last, fused AdamW on
           CUDA and the CPU; ``--compile`` adds torch.compile).

Both train the same model (same seed) on the same triplets for one epoch. The project's time
includes loading the split: ``cold`` decodes the PNGs and writes the cache, ``warm`` reads the
cache (what every run after the first does). Target on a GPU: >= 3x for CLIPSeg at paper size.

    python benchmarks/epoch.py                                 # GPU: CLIPSeg paper size
    python benchmarks/epoch.py --size tiny --images 120        # CPU-friendly
    python benchmarks/epoch.py --data data/phantom             # an exported set with tasks
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.device import resolve_device, resolve_precision  # noqa: E402
from echo_vlsm.io import write_png  # noqa: E402
from echo_vlsm.train import TrainConfig, build, make_optimizer, train_step  # noqa: E402
from echo_vlsm.train import triplets as T  # noqa: E402
from echo_vlsm.train.engine import batches  # noqa: E402
from echo_vlsm.train.losses import make_loss  # noqa: E402
from echo_vlsm.train.scoring import model_inputs  # noqa: E402

TITLE = ("## One training epoch end to end (`benchmarks/epoch.py`)\n\n"
         "The study's input pipeline (per-sample PNG decode, resize, normalise, tokenize in "
         "DataLoader workers) against the project's cached uint8 triplets, same model and "
         "seed; the project's time includes loading the split (cold: decode and write the "
         "cache; warm: read it).")
STRUCTURES = {"lv": "Left ventricular cavity", "myo": "Myocardium", "la": "Left atrium cavity"}


# -- data ----------------------------------------------------------------------------------
def make_dataset(root: Path, n_images: int, size: int = 512, seed: int = 0) -> Path:
    """An exported-layout set of speckled sector images with three elliptic masks each and a
    ``tasks/train.json`` with two phrasings per prompt (content only matters for PNG size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    sector = (np.abs(np.arctan2(xx - 0.5, yy + 0.05)) < 0.6) & (np.hypot(xx - 0.5, yy + 0.05) < 1)
    tasks = []
    for i in range(n_images):
        stem = f"patient{i + 1:04d}_{'24'[i % 2]}CH_E{'DS'[i // 2 % 2]}"
        cy, cx, r = 0.45 + 0.05 * rng.random(), 0.5 + 0.04 * rng.standard_normal(), 0.15
        d = np.hypot((yy - cy) / 1.6, xx - cx)
        masks = {"lv": d < r, "myo": (d >= r) & (d < r + 0.05),
                 "la": np.hypot((yy - cy - 0.35) / 1.2, xx - cx) < 0.1}
        speckle = rng.gamma(1.5, 30, (size, size)) * (0.3 + 0.7 * masks["myo"] + 0.2 * ~masks["lv"])
        write_png(root / f"images/train/{stem}.png",
                  np.clip(speckle * sector, 0, 255).astype(np.uint8))
        for s, m in masks.items():
            write_png(root / f"masks/{s}/train/{stem}.png", (m * 255).astype(np.uint8))
            name = STRUCTURES[s]
            tasks.append({"img_name": f"images/train/{stem}.png",
                          "mask_name": f"masks/{s}/train/{stem}.png", "structure": s,
                          "attributes": {"stem": stem, "structure": s},
                          "prompts": {"p0": "", "p1": [f"{name} of the heart.",
                                                       f"{name} in the cardiac ultrasound."]}})
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "train.json").write_text(json.dumps(tasks))
    return root


class StudyDataset(torch.utils.data.Dataset):
    """The study's per-sample pipeline: PNG decode, resize, normalise, tokenize, per item."""

    def __init__(self, root: Path, split: str, prompt: str, spec, tokenize):
        self.root = root
        self.tasks = json.loads((root / "tasks" / f"{split}.json").read_text())
        self.prompt, self.spec, self.tokenize = prompt, spec, tokenize
        self.mean = np.array(spec.mean, np.float32)[:, None, None]
        self.std = np.array(spec.std, np.float32)[:, None, None]

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, i):
        import cv2

        task = self.tasks[i]
        s = self.spec.image_size
        image = cv2.imread(str(self.root / task["img_name"]), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(self.root / task["mask_name"]), cv2.IMREAD_GRAYSCALE)
        image = cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (s, s), interpolation=cv2.INTER_NEAREST)
        x = (np.repeat(image[None].astype(np.float32) / 255, 3, 0) - self.mean) / self.std
        phrasings = task["prompts"][self.prompt]
        text = random.choice(phrasings) if isinstance(phrasings, list) else phrasings
        ids, attn = self.tokenize([text])
        return (torch.from_numpy(x), ids[0], attn[0],
                torch.from_numpy(mask > 127))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the two epochs -------------------------------------------------------------------------
def study_epoch(cfg: TrainConfig, root: Path, device, workers: int, warmup: int) -> dict:
    model = build(cfg.replace(channels_last=False), device, pretrained=False)
    precision = "fp16" if device.type == "cuda" else "fp32"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  foreach=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    criterion = make_loss(cfg.setting("loss"), cfg.dice_weight, float(cfg.setting("bce_weight")))
    t0 = time.perf_counter()
    dataset = StudyDataset(root, "train", cfg.prompt, model.spec, model.tokenize)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.global_batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=False)
    n = 0
    for step, (x, ids, attn, masks) in enumerate(loader):
        x, ids, attn, masks = (t.to(device, non_blocking=True) for t in (x, ids, attn, masks))
        train_step(model, x, ids, attn, masks, criterion, optimizer, scaler, params,
                   cfg.grad_clip, precision)
        n += len(x)
        if step + 1 == warmup:
            _sync(device)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "images": n, "precision": precision}


def project_epoch(cfg: TrainConfig, root: Path, device, cache: Path, warmup: int) -> dict:
    model = build(cfg, device, pretrained=False)
    precision = resolve_precision(cfg.precision, device)
    params, optimizer, _, scaler = make_optimizer(cfg, model, device, precision)
    net = torch.compile(model) if cfg.compile else model
    criterion = make_loss(cfg.setting("loss"), cfg.dice_weight, float(cfg.setting("bce_weight")))
    if cfg.compile:  # compilation is a one-off per run: warm it up outside the timed epoch
        data = T.load_triplets(root, "train", cfg.prompt, model.spec.image_size, model.tokenize,
                               cache_dir=False, device=device, progress=False)
        idx = torch.arange(min(len(data), cfg.global_batch_size))
        images, masks, ids, attn = data.batch(idx)
        for _ in range(max(1, warmup)):
            train_step(net, model_inputs(images, model.spec, cfg), ids, attn, masks, criterion,
                       optimizer, scaler, params, cfg.grad_clip, precision)
        _sync(device)
    t0 = time.perf_counter()
    data = T.load_triplets(root, "train", cfg.prompt, model.spec.image_size, model.tokenize,
                           cache_dir=cache, device=device, progress=False)
    _sync(device)
    t_data = time.perf_counter() - t0
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))
    phrasing = data.draw_phrasings(torch.Generator().manual_seed(cfg.seed))
    for idx in batches(order, cfg.global_batch_size):
        images, masks, ids, attn = data.batch(idx, phrasing)
        train_step(net, model_inputs(images, model.spec, cfg), ids, attn, masks, criterion,
                   optimizer, scaler, params, cfg.grad_clip, precision)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "data_seconds": t_data, "images": len(data),
            "precision": precision}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="clipseg", choices=("clipseg", "cris"))
    ap.add_argument("--size", default=None, choices=("paper", "tiny"),
                    help="default: paper on a GPU, tiny on a CPU")
    ap.add_argument("--encoders", default="trained", choices=("trained", "frozen"))
    ap.add_argument("--batch", type=int, default=None, help="default: the study's (128/32)")
    ap.add_argument("--images", type=int, default=None,
                    help="images to generate (x3 triplets); default 1600 on a GPU, 60 on a CPU")
    ap.add_argument("--data", type=Path, default=None, help="an exported set with tasks/")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat and keep the fastest epoch")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    size = args.size or ("paper" if gpu else "tiny")
    n_images = args.images or (1600 if gpu else 60)
    cfg = TrainConfig(model=args.model, size=size, encoders=args.encoders, prompt="p1",
                      batch_size=args.batch, compile=args.compile, device=str(device))
    tmp = Path(tempfile.mkdtemp(prefix="echo_vlsm_epoch_"))
    try:
        t = time.perf_counter()
        root = args.data or make_dataset(tmp / "data", n_images)
        print(f"data ready in {time.perf_counter() - t:.1f} s: {root}", flush=True)
        runs = {"study": [], "cold": [], "warm": []}
        for r in range(args.repeat):  # interleaved; the fastest of each is reported
            cache = tmp / f"cache{r}"
            runs["study"].append(study_epoch(cfg, root, device, args.workers, warmup=1))
            runs["cold"].append(project_epoch(cfg, root, device, cache, warmup=2))
            runs["warm"].append(project_epoch(cfg, root, device, cache, warmup=2))
            for k, v in runs.items():
                print(f"{k:6s} {v[-1]}", flush=True)
        study, cold, warm = (min(runs[k], key=lambda x: x["seconds"]) for k in runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = warm["images"]
    rows = [("study: PNG decode + resize + normalise + tokenize per sample, "
             f"{args.workers} workers", study),
            ("project, cold cache (decode once + write cache)", cold),
            ("project, warm cache (read cache)", warm)]
    label = (f"{cfg.model} {size}, {cfg.encoders} encoders, {n} triplets, batch "
             f"{cfg.global_batch_size}, {device}" + (", torch.compile" if cfg.compile else ""))
    lines = [f"### {label}", "", f"Machine: {machine()}."]
    if not gpu:
        lines.append("CPU figures on a small set (tiny model, or paper size with few images); "
                     "the >= 3x target is for CLIPSeg at paper size on a GPU.")
    lines += ["", "| input pipeline | precision | epoch s (incl. data) | data s | images/s | "
              "speed-up |", "|---|---|---|---|---|---|"]
    for name, r in rows:
        data_s = f"{r['data_seconds']:.2f}" if "data_seconds" in r else "in workers"
        lines.append(f"| {name} | {r['precision']} | {r['seconds']:.2f} | {data_s} | "
                     f"{r['images'] / r['seconds']:.1f} | {study['seconds'] / r['seconds']:.2f}x |")
    lines.append("")
    lines.append(f"Fastest of {args.repeat} interleaved repetitions; measured on a shared machine "
                 "(other jobs running), so treat the figures as rough.")
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        update_section("epoch", merge_blocks(block))


def merge_blocks(block: str) -> str:
    """This section keeps one table per setting: replace the block with the same heading,
    keep the others."""
    from benchmarks._results import RESULTS

    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(r"<!-- epoch:start -->(.*?)<!-- epoch:end -->", text, re.S)
    blocks = [b.strip() for b in re.split(r"(?m)^(?=### )", m.group(1)) if
              b.strip().startswith("### ")] if m else []
    heading = block.splitlines()[0]
    blocks = [b for b in blocks if b.splitlines()[0] != heading] + [block]
    return "\n\n".join([TITLE, *blocks])


if __name__ == "__main__":
    main()
