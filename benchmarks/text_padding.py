"""A demo epoch with the split's token columns trimmed to its longest prompt, against CLIP's
full 77-token context.

`load_triplets` drops the token columns that are padding in every phrasing of a split
(`train.triplets.trim_padding`): the CLIP text encoders then run on about 10 tokens for a P1
prompt instead of 77. Outputs are the same to float rounding (causal attention; CRIS's decoder
masks padded words). For each model, the demo's real P1 run (tiny, trained encoders, its batch
and learning rate, a 14 + 4 patient phantom at 128 px) is prepared as `fit` prepares it, then
one epoch (`Engine.train_epoch`: training steps and the validation pass) is timed with the
trimmed tokens and with the same tokens padded back to 77 columns, alternately, the fastest
of `--repeat` kept; beside it the validation dice of both after that epoch.

    python benchmarks/text_padding.py [--repeat 3] [--models clipseg cris] [--prompt p1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from benchmarks.frozen_cache import demo_real_run, on_demo_data  # noqa: E402
from echo_vlsm.train import TrainConfig  # noqa: E402
from echo_vlsm.train import distributed as D  # noqa: E402
from echo_vlsm.train.engine import Engine  # noqa: E402
from echo_vlsm.train.fitting import prepare  # noqa: E402

TITLE = "## Text tokens trimmed to the split's longest prompt (`benchmarks/text_padding.py`)"


def engine_with(cfg: TrainConfig, variant: str) -> Engine:
    """The run's engine: ``trimmed`` as ``fit`` prepares it; ``full`` with the training and
    validation tokens padded back to the model's context (77)."""
    setup = prepare(cfg, D.Dist(0, 1, 0, torch.device("cpu")), progress=False)
    if variant == "full":
        context = setup.model.spec.context_length
        for split in (setup.data.train, setup.data.val):
            extra = context - int(split.input_ids.shape[-1])
            split.input_ids = F.pad(split.input_ids, (0, extra))
            split.attention_mask = F.pad(split.attention_mask, (0, extra))
    return Engine(setup)


def measure(model: str, data: Path, work: Path, repeat: int, prompt: str) -> dict:
    cfg = demo_real_run(model, data, work, prompt)
    seconds: dict[str, list[float]] = {"trimmed": [], "full": []}
    dice, tokens = {}, {}
    for _ in range(repeat):
        for variant in seconds:
            engine = engine_with(cfg, variant)
            tokens[variant] = int(engine.setup.data.train.input_ids.shape[-1])
            row = engine.train_epoch(1, hide=True)
            seconds[variant].append(row["seconds"])
            dice[variant] = row["val_dice"]
            print(f"{model} {variant} ({tokens[variant]} tokens): {row['seconds']:.2f} s, "
                  f"val dice {row['val_dice']:.3f}", flush=True)
    return {"model": model, "prompt": prompt, "tokens": tokens,
            **{f"{v}_epoch": min(t) for v, t in seconds.items()},
            **{f"{v}_dice": d for v, d in dice.items()}}


def report(rows: list[dict], repeat: int, wall: float) -> str:
    lines = [TITLE, "",
             "One epoch of the demo's real run (tiny model, trained encoders, batch 16, the "
             "demo's learning rate; training steps and the validation pass) with the split's "
             "tokens trimmed to its longest prompt against the same tokens padded to CLIP's "
             f"context, alternating, the fastest of {repeat} kept.", "",
             f"Machine: {machine()}; one thread; {wall:.0f} s in all.", "",
             "| model | prompt | tokens, trimmed / full | epoch s, full | epoch s, trimmed | "
             "speed-up | val dice after it, full / trimmed |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['prompt']} | {r['tokens']['trimmed']} / "
                     f"{r['tokens']['full']} | {r['full_epoch']:.2f} | {r['trimmed_epoch']:.2f} "
                     f"| {r['full_epoch'] / r['trimmed_epoch']:.2f}x | {r['full_dice']:.3f} / "
                     f"{r['trimmed_dice']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["clipseg", "cris"])
    ap.add_argument("--prompt", default="p1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    rows, wall = on_demo_data(
        "text_padding", args.models,
        lambda m, data, work: measure(m, data, work, args.repeat, args.prompt))
    text = report(rows, args.repeat, wall)
    print(text)
    if not args.no_write:
        update_section("text_padding", text)


if __name__ == "__main__":
    main()
