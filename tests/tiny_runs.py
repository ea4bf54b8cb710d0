"""A demo-size training run made in seconds, for the tests of what uses a trained model
(segment, export-model, notebook 07, the browser test)."""

from __future__ import annotations

from pathlib import Path


def train_tiny_run(dataset: Path, runs_root: Path, model: str = "clipseg", prompt: str = "p1",
                   strategy: str = "real", epochs: int = 2, seed: int = 0,
                   encoders: str = "frozen", synthetic_dir: Path | None = None):
    """``fit`` a tiny model on ``dataset`` (its train/val/test task files) on the CPU; returns
    the ``RunResult`` (its folder is complete: config, weights, metrics, summary)."""
    from echo_vlsm.train import TrainConfig, fit

    config = TrainConfig(model=model, size="tiny", prompt=prompt, strategy=strategy,
                         encoders=encoders, epochs=epochs, batch_size=8, real_dir=str(dataset),
                         synthetic_dir=str(synthetic_dir or dataset), runs_root=str(runs_root),
                         device="cpu",
                         seed=seed)
    return fit(config, progress=False)


# -- fabricated run folders for the analysis tests (no training) -----------------------------
STRUCTURES3 = ("lv", "myo", "la")


def fake_samples(n_images: int) -> list[str]:
    """``n_images`` test image stems of the phantom's form (2CH/4CH alternating, ED)."""
    return [f"patient{i // 2 + 1:04d}_{('2CH', '4CH')[i % 2]}_ED" for i in range(n_images)]


def write_fake_run(root: Path, run_id: str, dice, samples: list[str] | None = None,
                   summary: dict | None = None, legacy: bool = False,
                   best_epoch: int = 4) -> Path:
    """A run folder as notebook 04 leaves it, with made-up scores: ``metrics.csv`` (one row
    per sample and structure; ``dice`` a number or one value per row, in the order samples x
    structures), ``history.csv`` and ``summary.json`` (with ``real_train_images`` as
    ``fake_real_images`` gives it; ``summary`` adds or overrides keys). ``legacy``: a metrics
    file written before the ``seed``, ``real_fraction`` and ``provenance`` columns existed
    (which the analysis refuses)."""
    import json

    import numpy as np
    import pandas as pd

    from echo_vlsm.grid import parse_run_id

    run = parse_run_id(run_id)
    samples = samples or fake_samples(8)
    keys = [(s, st) for s in samples for st in STRUCTURES3]
    values = np.broadcast_to(np.asarray(dice, float), (len(keys),))
    rec = run.as_record()
    if legacy:
        rec = {k: rec[k] for k in ("model", "strategy", "encoders", "prompt")}
    rows = [{**rec, "sample": s, "structure": st, "view": s.split("_")[1], "phase": "ED",
             "dice": float(np.clip(v, 0, 100)), "iou": float(np.clip(v, 0, 100)) * 0.8,
             "hd95": 4.0} for (s, st), v in zip(keys, values)]
    d = Path(root) / run_id
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    pd.DataFrame({"epoch": range(1, 11), "train_loss": np.linspace(1, 0.2, 10),
                  "val_loss": np.linspace(1, 0.3, 10),
                  "val_dice": np.minimum(np.arange(1, 11) / best_epoch, 1) * 80,
                  "lr": 1e-3, "seconds": 1.5}).to_csv(d / "history.csv", index=False)
    (d / "summary.json").write_text(json.dumps({
        "best_epoch": best_epoch, "best_val_dice": 80.0, "seconds_to_best": best_epoch * 1.5,
        "epochs_run": 10, "seconds_total": 15.0, "done": True,
        "real_train_images": fake_real_images(run.strategy, run.real_fraction),
        **(summary or {})}))
    return d


#: Seed offsets (dice points) of the fabricated replicates: they average to 0 over 3 seeds.
SEED_OFFSET = {"real": {0: 0.0, 1: 1.0, 2: -1.0},
               "synth-pt-real-ft": {0: 0.0, 1: -1.5, 2: 1.5}}
#: Mean dice of the fabricated beyond-the-study cells (model, strategy, fraction, provenance).
BEYOND_LEVELS = {
    ("clipseg", "real", 1.0): 80.0, ("clipseg", "synth-pt-real-ft", 1.0): 80.0,
    ("cris", "real", 1.0): 80.0, ("cris", "synth-pt-real-ft", 1.0): 90.0,
    ("clipseg", "real", 0.5): 72.0, ("clipseg", "real", 0.25): 60.0,
    ("clipseg", "synth-pt-real-ft", 0.5): 82.0, ("clipseg", "synth-pt-real-ft", 0.25): 78.0,
    ("clipseg", "mixed", 1.0): 82.0, ("clipseg", "mixed", 0.25): 81.0,
}
#: Real training images of a fabricated run, per real fraction.
REAL_IMAGES = {1.0: 40, 0.5: 20, 0.25: 10}


def fake_real_images(strategy: str, real_fraction: float) -> int:
    """The unique real training images a fabricated run records: none without real training
    data (zeroshot, synthetic), else ``REAL_IMAGES`` at its real fraction (40 of them at 100 %,
    nested patient subsets below)."""
    if strategy in ("zeroshot", "synthetic"):
        return 0
    return REAL_IMAGES.get(real_fraction, round(REAL_IMAGES[1.0] * real_fraction))


def write_beyond_runs(root: Path, samples: list[str] | None = None, study: bool = False,
                      noise: float = 0.5, seed: int = 0,
                      capped: tuple[str, ...] = ()) -> list[str]:
    """Fabricated runs beyond the study, with known answers: 3 seeds of real and
    synth-pt-real-ft at P1 for both VLSMs (CRIS gains 10 points, CLIPSeg none), CLIPSeg
    mixed with and without provenance (82 and 84), CLIPSeg real fractions 25 % and 50 % for
    real (60, 72), synth-pt-real-ft (78, 82) and mixed (81 at 25 %), and the U-Net (real 85,
    synthetic 75, synth-pt-real-ft 86). Every score: the cell's level + its seed's offset +
    a per-sample effect shared by all runs (mean 0 over each 5 samples) + noise. Every
    summary records ``real_train_images`` (``fake_real_images``) and ``stopped_by``
    (``patience``; ``epochs`` for the run ids in ``capped``). ``study``: also the study's
    seed-0 cells of those, CLIPSeg and CRIS synthetic P1 (70) and CRIS frozen real P1 (78).
    Returns the run ids written."""
    import numpy as np

    from echo_vlsm.grid import run_id

    samples = samples or fake_samples(10)
    rng = np.random.default_rng(seed)
    effect = np.repeat([(j % 5 - 2) * 3.0 for j in range(len(samples))], len(STRUCTURES3))
    written = []

    def put(model, strategy, prompt, level, seed=0, fraction=1.0, prov=False,
            encoders="trained"):
        rid = run_id(model, strategy, encoders, prompt, seed, fraction, prov)
        dice = level + effect + rng.normal(0, noise, effect.size)
        write_fake_run(root, rid, dice, samples,
                       summary={"stopped_by": "epochs" if rid in capped else "patience"},
                       best_epoch={"real": 8, "synth-pt-real-ft": 2}.get(strategy, 4))
        written.append(rid)

    for (model, strategy, fraction), level in BEYOND_LEVELS.items():
        seeds = (0, 1, 2) if fraction == 1.0 and strategy in SEED_OFFSET else (0,)
        for s in seeds:
            if s == 0 and fraction == 1.0 and strategy != "mixed" and not study:
                continue
            put(model, strategy, "p1", level + SEED_OFFSET.get(strategy, {}).get(s, 0.0), s,
                fraction)
    put("clipseg", "mixed", "p1", 84.0, prov=True)
    for strategy, level in (("real", 85.0), ("synthetic", 75.0), ("synth-pt-real-ft", 86.0)):
        put("unet", strategy, "none", level)
    if study:
        for model in ("clipseg", "cris"):
            put(model, "synthetic", "p1", 70.0)
        put("cris", "real", "p1", 78.0, encoders="frozen")
    return written


def report_by_06(tables_dir: Path, profile: str) -> bytes:
    """A ``report.md`` as notebook 06 writes it (one section), for the notebooks that append
    their block to it (08, 09); returns its bytes."""
    from echo_vlsm import analysis as A

    path = A.write_report(tables_dir / "report.md", f"Reproduction report: {profile} profile",
                          [("Table 1: encoders trained", "| a |\n|---|\n| 1 |")])
    return path.read_bytes()


def notebook_text(nb) -> str:
    """Everything an executed notebook printed or displayed as text."""
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
