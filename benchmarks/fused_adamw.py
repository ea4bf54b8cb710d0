"""A demo epoch with the CPU's fused AdamW against the per-tensor loop it replaced.

``engine.make_optimizer`` asks for ``fused=True`` on the CPU as well as on CUDA (torch >= 2.4
has a CPU kernel): one call updates every trainable tensor, where the default loop visits the
200-odd tensors of the tiny CLIPSeg one by one in Python. For each model, the demo's run
(tiny, trained encoders, P1, its batch and learning rate, a 14 + 4 patient phantom at 128 px)
is prepared as ``fit`` prepares it, then one epoch (``Engine.train_epoch``: training steps and
the validation pass) is timed with each optimiser, alternately, the fastest of ``--repeat``
kept. Beside it, the optimiser step alone on the model's trainable tensors (median of 30).
Fused and loop agree to float rounding, not bit for bit, so runs trained before and after the
change follow slightly different paths.

    python benchmarks/fused_adamw.py [--repeat 3] [--models clipseg cris]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from benchmarks.frozen_cache import demo_real_run, on_demo_data  # noqa: E402
from echo_vlsm.train import TrainConfig  # noqa: E402
from echo_vlsm.train import distributed as D  # noqa: E402
from echo_vlsm.train.engine import Engine  # noqa: E402
from echo_vlsm.train.fitting import prepare  # noqa: E402

TITLE = "## Fused AdamW on the CPU (`benchmarks/fused_adamw.py`)"
VARIANTS = {"loop": {"foreach": False}, "fused": {"fused": True}}


def engine_with(cfg: TrainConfig, variant: str) -> Engine:
    """The run's engine: ``fused`` as ``engine.make_optimizer`` makes it, ``loop`` with its
    optimiser (and the plateau schedule on it) replaced by the per-tensor loop."""
    setup = prepare(cfg, D.Dist(0, 1, 0, torch.device("cpu")), progress=False)
    engine = Engine(setup)
    if variant == "fused":
        assert engine.optimizer.defaults["fused"], "make_optimizer no longer fuses on the CPU"
        return engine
    engine.optimizer = torch.optim.AdamW(engine.params, lr=cfg.learning_rate,
                                         weight_decay=cfg.weight_decay, **VARIANTS[variant])
    engine.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        engine.optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    return engine


def step_ms(params: list[torch.nn.Parameter], variant: str, lr: float) -> float:
    """Median milliseconds of one optimiser step over ``params`` (copies, random gradients)."""
    copies = [p.detach().clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(copies, lr=lr, weight_decay=1e-3, **VARIANTS[variant])
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(30):
        for p in copies:
            p.grad = torch.randn(p.shape, generator=gen)
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(model: str, data: Path, work: Path, repeat: int) -> dict:
    cfg = demo_real_run(model, data, work)
    epochs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    engine = None
    for _ in range(repeat):
        for variant in VARIANTS:
            engine = engine_with(cfg, variant)
            epochs[variant].append(engine.train_epoch(1, hide=True)["seconds"])
            print(f"{model} {variant}: {epochs[variant][-1]:.2f} s", flush=True)
    assert engine is not None
    steps = {v: step_ms(engine.params, v, cfg.learning_rate) for v in VARIANTS}
    return {"model": model, "tensors": len(engine.params),
            "parameters": sum(p.numel() for p in engine.params),
            "steps": engine.steps_per_epoch,
            **{f"{v}_epoch": min(t) for v, t in epochs.items()},
            **{f"{v}_step_ms": ms for v, ms in steps.items()}}


def report(rows: list[dict], repeat: int, wall: float) -> str:
    lines = [TITLE, "",
             "One epoch of the demo's real P1 run (tiny model, trained encoders, batch 16, "
             "the demo's learning rate; training steps and the validation pass) with AdamW's "
             "per-tensor loop against its fused kernel, alternating, the fastest of "
             f"{repeat} kept; the optimiser step alone: median of 30 on the model's trainable "
             "tensors.", "", f"Machine: {machine()}; one thread; {wall:.0f} s in all.", "",
             "| model | trainable tensors | parameters | steps per epoch | epoch, loop s | "
             "epoch, fused s | epoch speed-up | step, loop ms | step, fused ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tensors']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r['steps']} | {r['loop_epoch']:.2f} | {r['fused_epoch']:.2f} | "
                     f"{r['loop_epoch'] / r['fused_epoch']:.2f}x | {r['loop_step_ms']:.1f} | "
                     f"{r['fused_step_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["clipseg", "cris"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    rows, wall = on_demo_data("fused_adamw", args.models,
                              lambda m, data, work: measure(m, data, work, args.repeat))
    text = report(rows, args.repeat, wall)
    print(text)
    if not args.no_write:
        update_section("fused_adamw", text)


if __name__ == "__main__":
    main()
