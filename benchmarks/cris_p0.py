"""Why the demo's CRIS real P0 run collapses to 0 validation dice: controlled experiments.

Each experiment trains a tiny, randomly initialised model on the demo's data with the demo's
settings (real strategy, trained encoders, batch 16, fp32, seed 0, AdamW, plateau schedule,
Dice + 0.25 BCE; CRIS lr 1e-4, CLIPSeg the study's 2e-3) and changes one factor. The loop is
the engine's (``build``, ``load_training_data``, ``make_optimizer``, ``train_step`` and
``validate`` of ``echo_vlsm.train``) with the engine's batch order and phrasing draws,
so the ``cris-p0`` experiment reproduces ``fit``'s history for the same config. After every
epoch it records, on the validation set:

* ``dice``: the engine's validation dice (eval mode, threshold ``spec.threshold``);
* ``dice_bs``: the same with the text-path BatchNorms of CRIS (``neck.txt_proj``'s
  BatchNorm1d and ``neck.norm_layer``'s BatchNorm2d) using the statistics of the batch, as
  in training, instead of their running statistics (momentum 0: nothing is updated);
* per structure (lv, myo, la): mean probability inside the target, mean probability outside
  it, and the fraction of pixels above the threshold;
* CRIS only: the mean running variance of ``txt_proj``'s BatchNorm1d and the mean |z| it
  gives the validation sentence feature in eval mode, ``(x - running_mean) / sqrt(var + eps)``;
  the mean running variance of ``norm_layer``'s BatchNorm2d (after C5 x text).

Experiments (``--only`` picks some; ``--epochs``/``--patience`` change the stopping rule):

    cris-p0          the demo's CRIS real P0 (the collapse)
    cris-p1          the same with P1 (the structure's name)
    cris-p0-lr2e-5   the study's CRIS learning rate
    cris-p0-lr1e-5   lower still
    cris-p0-txtbn    P0, ``txt_proj``'s BatchNorm1d kept in eval mode while training (its
                     running statistics stay at their initial 0 / 1: an affine layer)
    cris-p0-bce      P0, the loss without its Dice term (BCE only)
    clipseg-p0       CLIPSeg real P0 (the demo's other P0 run)
    clipseg-p1       CLIPSeg real P1

``ceiling``: with P0 an image's three samples are the same input, so a model gives them one
prediction; the table's first line is the validation dice of the best such prediction the
data allows in practice, the union of the three structures, scored against each structure.

    python benchmarks/cris_p0.py                         # all, 10 epochs (about 17 min, 1 core)
    python benchmarks/cris_p0.py --only cris-p0 cris-p0-txtbn --epochs 80 --patience 8
    python benchmarks/cris_p0.py --data data/phantom     # an exported set with task files

Without ``--data`` the demo's phantom (20 patients, seed 0, 512 px, geometry shapes) is
written under ``--out`` (default ``/tmp/cris_p0``) the way notebooks 01 and 03 do.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from echo_vlsm.train import (  # noqa: E402
    TrainConfig,
    build,
    eval_generator,
    load_training_data,
    make_optimizer,
    train_step,
    validate,
)
from echo_vlsm.train.engine import batches, epoch_seed  # noqa: E402
from echo_vlsm.train.losses import make_loss  # noqa: E402
from echo_vlsm.train.metrics import batch_dice  # noqa: E402
from echo_vlsm.train.triplets import Triplets, normalise  # noqa: E402

STRUCTURES = ("lv", "myo", "la")


@dataclass(frozen=True)
class Experiment:
    """One run: the config's changes from the demo's CRIS real P0, and the interventions."""

    model: str = "cris"
    prompt: str = "p0"
    lr: float | None = 1e-4
    freeze_txt_bn: bool = False
    changes: dict = field(default_factory=dict)


EXPERIMENTS: dict[str, Experiment] = {
    "cris-p0": Experiment(),
    "cris-p1": Experiment(prompt="p1"),
    "cris-p0-lr2e-5": Experiment(lr=2e-5),
    "cris-p0-lr1e-5": Experiment(lr=1e-5),
    "cris-p0-txtbn": Experiment(freeze_txt_bn=True),
    "cris-p0-bce": Experiment(changes={"dice_weight": 0.0, "bce_weight": 1.0}),
    "clipseg-p0": Experiment(model="clipseg", lr=None),
    "clipseg-p1": Experiment(model="clipseg", prompt="p1", lr=None),
}


class EvalBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d that always normalises with its running statistics and never updates
    them (an affine layer after a fixed shift and scale), in training mode too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                        self.bias, training=False, momentum=0.0, eps=self.eps)


def text_batchnorms(model: Any) -> list[Any]:
    """CRIS's BatchNorms that see the sentence feature: txt_proj's and the norm after C5 x
    text (empty for other models)."""
    neck = getattr(model, "neck", None)
    if neck is None or not hasattr(neck, "txt_proj"):
        return []
    return [neck.txt_proj[1], neck.norm_layer[0]]


def freeze_txt_bn(model: Any) -> None:
    """Swap ``neck.txt_proj``'s BatchNorm1d for :class:`EvalBatchNorm1d` (same state)."""
    old = model.neck.txt_proj[1]
    new = EvalBatchNorm1d(old.num_features, eps=old.eps, momentum=old.momentum)
    new.load_state_dict(old.state_dict())
    model.neck.txt_proj[1] = new


# -- data ------------------------------------------------------------------------------------
def demo_data(out: Path) -> Path:
    """The demo's phantom (notebook 01: 20 patients, seed 0, layout 2023, 512 px) with its
    task files (notebook 03: geometry shapes), written under ``out`` once."""
    from echo_vlsm.data import phantom
    from echo_vlsm.data.camus import read_camus, validate
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.prompts import write_tasks

    dataset = out / "phantom"
    if (dataset / "tasks" / "train.json").is_file():
        return dataset
    root = phantom.write_phantom(out / "raw", 20, 0, "2023", workers=1)
    problems = validate(root)
    if problems:
        raise RuntimeError(f"{root}: the phantom does not validate: {problems[:3]}")
    export_dataset(read_camus(root, splits=None), dataset, size=512, workers=1)
    write_tasks(dataset, "camus", "geometry")
    return dataset


# -- probes ----------------------------------------------------------------------------------
def _logits(model: Any, data: Triplets, config: TrainConfig, bs: int):
    """Validation logits (N, S, S), targets and structures, phrasings drawn as validation."""
    spec = model.spec
    phrasing = data.draw_phrasings(eval_generator(config))
    out, targets = [], []
    with torch.no_grad():
        for idx in torch.split(torch.arange(len(data)), bs):
            images, masks, ids, attn = data.batch(idx, phrasing)
            x = normalise(images, spec.mean, spec.std, channels_last=config.channels_last)
            out.append(model(x, ids, attn)[:, 0].float())
            targets.append(masks)
    return torch.cat(out), torch.cat(targets)


def probe(model: Any, data: Triplets, config: TrainConfig) -> dict:
    """What the model predicts on the validation set (see the module docstring)."""
    bs = config.global_batch_size
    cut = math.log(model.spec.threshold / (1 - model.spec.threshold))
    structures = [s["structure"] for s in data.samples]
    model.eval()
    logits, targets = _logits(model, data, config, bs)
    row: dict = {"dice": float(batch_dice(logits > cut, targets).mean())}
    prob = torch.sigmoid(logits)
    for name in STRUCTURES:
        k = torch.tensor([s == name for s in structures])
        p, t = prob[k], targets[k]
        row[f"{name}_in"] = float(p[t].mean())
        row[f"{name}_out"] = float(p[~t].mean())
        row[f"{name}_above"] = float((logits[k] > cut).float().mean())
    norms = text_batchnorms(model)
    if norms:
        bn = norms[0]
        row["txt_var"] = float(bn.running_var.mean())
        row["c5_var"] = float(norms[1].running_var.mean())
        _, ids, attn = data.batch(torch.arange(len(data)))[1:]
        with torch.no_grad():
            state = model.encode_text(ids)[1]
            z = (model.neck.txt_proj[0](state) - bn.running_mean) / torch.sqrt(
                bn.running_var + bn.eps)
        row["txt_z"] = float(z.abs().mean())
        saved = [(m, m.momentum) for m in norms]
        for m, _ in saved:  # batch statistics, as in training; running ones left unchanged
            m.train()
            m.momentum = 0.0
        bs_logits, _ = _logits(model, data, config, bs)
        row["dice_bs"] = float(batch_dice(bs_logits > cut, targets).mean())
        for m, momentum in saved:
            m.momentum = momentum
            m.eval()
    return row


def union_ceiling(data: Triplets) -> float:
    """Validation dice of the union of an image's structures scored against each of them."""
    _, masks, _, _ = data.batch(torch.arange(len(data)))
    union = torch.zeros((int(data.images.shape[0]), *masks.shape[1:]), dtype=torch.bool)
    for j, i in enumerate(data.image_index.tolist()):
        union[i] |= masks[j]
    return float(batch_dice(union[data.image_index], masks).mean())


# -- training --------------------------------------------------------------------------------
def make_config(exp: Experiment, data_dir: Path, out: Path, epochs: int,
                patience: int | None) -> TrainConfig:
    """The demo's CRIS (or CLIPSeg) real run config with the experiment's changes."""
    return TrainConfig(model=exp.model, size="tiny", prompt=exp.prompt, strategy="real",
                       encoders="trained", epochs=epochs, min_epochs=1, patience=patience,
                       batch_size=16, lr=exp.lr, real_dir=str(data_dir),
                       runs_root=str(out / "runs"), seed=0, precision="fp32", device="cpu",
                       **exp.changes)


def run(exp: Experiment, config: TrainConfig) -> list[dict]:
    """Train as ``fit`` does (same batch order, phrasings, dropout seeds, early stopping)
    and probe after every epoch; returns one row per epoch."""
    device = torch.device("cpu")
    model: Any = build(config, device)
    if exp.freeze_txt_bn:
        freeze_txt_bn(model)
    data = load_training_data(config, model, device, progress=False)
    train, val = data.train, data.val
    if train is None:
        raise ValueError(f"{config.run_id}: no training set")
    criterion = make_loss(config.setting("loss"), config.dice_weight,
                          float(config.setting("bce_weight")))
    params, optimizer, scheduler, scaler = make_optimizer(config, model, device, "fp32")
    items: Any = range(len(train))
    sampler: DistributedSampler = DistributedSampler(items, num_replicas=1, rank=0,
                                                     shuffle=True, seed=config.seed)
    rows: list[dict] = []
    best, wait = -math.inf, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        phrasing = train.draw_phrasings(torch.Generator().manual_seed(epoch_seed(config,
                                                                                 epoch)))
        torch.manual_seed(epoch_seed(config, epoch))
        model.train()
        losses = []
        for idx in batches(order, config.global_batch_size):
            images, masks, ids, attn = train.batch(idx, phrasing)
            x = normalise(images, model.spec.mean, model.spec.std,
                          channels_last=config.channels_last)
            loss = train_step(model, x, ids, attn, masks, criterion, optimizer, scaler,
                                params, config.grad_clip, "fp32")
            losses.append(float(loss.detach()) * len(idx))
        val_loss, val_dice = validate(model, val, config, criterion, "fp32")
        scheduler.step(val_loss)
        row = {"epoch": epoch, "train_loss": sum(losses) / len(order), "val_loss": val_loss,
               "val_dice": val_dice, **probe(model, val, config),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"  {config.model} {config.prompt} epoch {epoch}: dice {val_dice:.1f} "
              f"dice_bs {row.get('dice_bs', float('nan')):.1f} loss {row['train_loss']:.3f}",
              flush=True)
        wait = 0 if val_dice > best else wait + 1
        best = max(best, val_dice)
        if config.early_stopping and wait >= config.early_stopping:
            break
    return rows


# -- report ----------------------------------------------------------------------------------
def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


def table(results: dict[str, list[dict]], ceiling: float) -> str:
    """Per experiment: dice per epoch, dice with batch statistics, best epoch, and what the
    last epoch predicts per structure."""
    lines = [f"P0 ceiling (union of an image's structures, validation): {ceiling:.1f}", ""]
    for name, rows in results.items():
        dice = [r["dice"] for r in rows]
        best = max(range(len(dice)), key=dice.__getitem__)
        last = rows[-1]
        lines.append(f"{name}: best {dice[best]:.1f} at epoch {best + 1} of {len(rows)}")
        lines.append(f"  val dice      {_fmt(dice)}")
        if "dice_bs" in last:
            lines.append(f"  dice, batch-stat text BN {_fmt([r['dice_bs'] for r in rows])}")
            lines.append("  txt BN var    " + " ".join(f"{r['txt_var']:.2g}" for r in rows))
            lines.append("  txt BN |z|    " + " ".join(f"{r['txt_z']:.2g}" for r in rows))
            lines.append("  C5xtext BN var " + " ".join(f"{r['c5_var']:.2g}" for r in rows))
        lines.append("  train loss    " + " ".join(f"{r['train_loss']:.2f}" for r in rows))
        for s in STRUCTURES:
            lines.append(f"  last epoch {s:3}: p in {last[s + '_in']:.2f}, p out "
                         f"{last[s + '_out']:.3f}, above threshold {last[s + '_above']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(EXPERIMENTS), default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cris_p0"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data or demo_data(args.out)
    results: dict[str, list[dict]] = {}
    ceiling = math.nan
    for name in args.only or list(EXPERIMENTS):
        exp = EXPERIMENTS[name]
        print(f"{name}: training", flush=True)
        config = make_config(exp, data_dir, args.out, args.epochs, args.patience)
        results[name] = run(exp, config)
        if math.isnan(ceiling):
            model = build(config, torch.device("cpu"))
            val = load_training_data(config, model, torch.device("cpu"), progress=False).val
            ceiling = union_ceiling(val)
    tag = f"e{args.epochs}" + (f"_p{args.patience}" if args.patience else "")
    (args.out / f"results_{tag}.json").write_text(json.dumps(results, indent=1))
    print(table(results, ceiling))


if __name__ == "__main__":
    main()
