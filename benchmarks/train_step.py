"""Training-step throughput of CLIPSeg and CRIS: the study's recipe against the project's.

One training step = forward, Dice + 0.25 x BCE loss, backward, gradient clipping at 0.5,
AdamW step, on random inputs already on the device (the input pipeline is not timed).

* study:   fp32 weights, fp16 autocast + GradScaler, eager, AdamW (for-each implementation).
* project: bf16 autocast, channels_last, fused AdamW, torch.compile, SDPA attention
           (CLIPSeg: transformers' "sdpa"; CRIS: scaled_dot_product_attention everywhere).

Configurations: CLIPSeg with frozen and with trained encoders (batch 128, 352 px) and CRIS
with trained encoders (batch 32, 416 px). Targets on a GPU: CRIS >= 2.5x the study's recipe
(136 img/s at batch 32 on an H200), CLIPSeg >= 1.7x. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps.

    python benchmarks/train_step.py                     # paper size on the GPU
    python benchmarks/train_step.py --quick             # tiny models, small batch, CPU-friendly
    python benchmarks/train_step.py --size paper --batch-clipseg 8 --batch-cris 2 --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.device import resolve_device  # noqa: E402
from echo_vlsm.models import SIZES, build_model  # noqa: E402
from echo_vlsm.train.losses import DiceBCELoss  # noqa: E402

PROMPTS = [
    "Left ventricular cavity in two-chamber view of the heart at end of the diastole cycle.",
    "Myocardium of oval shape in four-chamber view in the cardiac ultrasound at end of the "
    "systole cycle of a seventy-three-year-old male with good image quality.",
    "Left atrium cavity of the heart.",
    "",
]
CONFIGS = (("clipseg", "frozen"), ("clipseg", "trained"), ("cris", "trained"))
TARGETS = {"clipseg": 1.7, "cris": 2.5}
LR = {"clipseg": 2e-3, "cris": 2e-5}
#: The study's recipe with the public code on one H200 (shared/reference/README.md): CLIPSeg
#: 352 px batch 128 (only its decoder trained), CRIS 416 px batch 32.
REFERENCE_H200 = {("clipseg", "frozen"): 1857.0, ("cris", "trained"): 136.0}


@dataclass
class Result:
    images_per_s: float
    peak_gib: float | None
    seconds_per_step: float
    compile_s: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(model, batch: int, device: torch.device, channels_last: bool):
    side = model.spec.image_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, side, side, generator=g)
    target = (torch.rand(batch, 1, side, side, generator=g) > 0.7).float()
    ids, mask = model.tokenize([PROMPTS[i % len(PROMPTS)] for i in range(batch)])
    pixels = pixels.to(device)
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    return pixels, ids.to(device), mask.to(device), target.to(device)


def build(name: str, size: str, encoders: str, recipe: str, device: torch.device):
    model = build_model(name, size=size, encoders=encoders)
    if name == "clipseg":  # the attention kernel of transformers' encoders and decoder
        impl = "sdpa" if recipe == "project" else "eager"
        model.net.set_attn_implementation(impl)
    model = model.to(device).train()
    if recipe == "project":
        model = model.to(memory_format=torch.channels_last)
    return model


def run(name: str, encoders: str, recipe: str, *, size: str, batch: int, steps: int,
        warmup: int, device: torch.device, compile_model: bool) -> Result:
    """Time ``steps`` training steps after ``warmup`` untimed ones (compilation included)."""
    torch.manual_seed(0)
    model = build(name, size, encoders, recipe, device)
    params = [p for p in model.parameters() if p.requires_grad]
    project = recipe == "project"
    fused = project and device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(params, lr=LR[name], weight_decay=1e-3,
                                  fused=True if fused else None,
                                  foreach=None if fused else True)
    dtype = torch.bfloat16 if project else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=not project)
    loss_fn = DiceBCELoss()
    forward = model
    if project and compile_model:
        forward = torch.compile(model)
    pixels, ids, mask, target = _batch(model, batch, device, channels_last=project)

    def step():
        with torch.autocast(device.type, dtype=dtype):
            logits = forward(pixels, ids, mask)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
        scaler.step(optimizer)
        scaler.update()
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    compile_s = time.perf_counter() - t0 if project and compile_model else None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            loss = step()
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        seconds = time.perf_counter() - t0
        peak = None
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}/{encoders}/{recipe}: loss is not finite ({float(loss)})")
    return Result(batch * steps / seconds, peak, seconds / steps, compile_s)


def _release(device: torch.device) -> None:
    """Free the previous configuration's model, optimizer and compiled graphs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def _fmt_mem(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, batch 4, 3 steps: runs on a CPU in about a minute")
    parser.add_argument("--batch-clipseg", type=int, default=None)
    parser.add_argument("--batch-cris", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset, e.g. 'cris/trained,clipseg/frozen'")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args(argv)


def _row(name: str, encoders: str, batch: int, results: dict[str, Result],
         device: torch.device) -> str:
    """The RESULTS.md table row of one configuration (study and project recipes)."""
    study, project = results["study"], results["project"]
    speedup = project.images_per_s / study.images_per_s
    target = TARGETS[name]
    verdict = " (GPU)" if device.type != "cuda" else (" met" if speedup >= target else " NOT met")
    return (f"| {name} | {encoders} | {batch} | {study.images_per_s:.1f} | "
            f"{_fmt_mem(study.peak_gib)} | {project.images_per_s:.1f} | "
            f"{_fmt_mem(project.peak_gib)} | {speedup:.2f}x | "
            f"{REFERENCE_H200.get((name, encoders), '-')} | >= {target}x{verdict} |")


def _report(rows: list[str], argv: list[str] | None, device: torch.device, size: str,
            steps: int, warmup: int, compile_model: bool) -> str:
    """The ``train_step`` section of RESULTS.md."""
    label = "GPU" if device.type == "cuda" else "CPU (not comparable to the GPU targets)"
    md = "\n".join([
        "## train_step",
        "",
        "Command: `python benchmarks/train_step.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        f"Device: {label}; {machine()}. Size `{size}`, {steps} timed steps after {warmup} "
        f"warm-up steps{' (torch.compile off)' if not compile_model else ''}. "
        "Study recipe: fp16 autocast + GradScaler, eager, AdamW (for-each). Project recipe: "
        "bf16 autocast, channels_last, fused AdamW, torch.compile, SDPA. Both: Dice + 0.25 BCE, "
        "clipping 0.5. Peak memory: `max_memory_allocated` (GPU only). Both recipes run this "
        "project's models (SDPA attention in CRIS in both); the study-code column is the public "
        "code's throughput with the study's recipe on an H200, for reference.",
        "",
        "| model | encoders | batch | study img/s | study GiB | project img/s | project GiB "
        "| speed-up | study code, H200 img/s | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    if device.type != "cuda":
        md += ("\n\nCPU numbers only check that both recipes run; they were measured on a shared "
               "2-core machine and are noisy. The GPU targets need a GPU run.")
    return md


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    device = resolve_device(args.device)
    size = args.size or ("tiny" if args.quick else "paper")
    batches = {"clipseg": args.batch_clipseg or (4 if args.quick else 128),
               "cris": args.batch_cris or (4 if args.quick else 32)}
    steps = args.steps or (3 if args.quick else 20)
    warmup = args.warmup or (2 if args.quick else 5)
    compile_model = not args.no_compile
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    configs = CONFIGS
    if args.only:
        wanted = {tuple(item.split("/")) for item in args.only.split(",")}
        configs = tuple(c for c in CONFIGS if c in wanted)

    rows = []
    for name, encoders in configs:
        results = {}
        for recipe in ("study", "project"):
            results[recipe] = r = run(name, encoders, recipe, size=size, batch=batches[name],
                                      steps=steps, warmup=warmup, device=device,
                                      compile_model=compile_model)
            _release(device)
            print(f"{name:8s} {encoders:8s} {recipe:8s} {r.images_per_s:9.1f} img/s  "
                  f"peak {_fmt_mem(r.peak_gib)} GiB", flush=True)
        rows.append(_row(name, encoders, batches[name], results, device))

    md = _report(rows, argv, device, size, steps, warmup, compile_model)
    print(md)
    if not args.no_write:
        update_section("train_step", md)
    return md


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.suppress(KeyboardInterrupt):
        main()
