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
