"""A trained run as a shareable model folder in the Hugging Face hub layout.

``export_model(run_dir, out_dir)`` writes::

    out_dir/
      model.safetensors               the run's best weights, as trained
      config.json                     model, size, spec, prompt key, strategy, encoders,
                                      the training config ("format": "echo-vlsm-model")
      bpe_simple_vocab_16e6.txt.gz    the CLIP BPE vocabulary the tokenizer reads
      README.md                       the model card

``build_model(model, size, pretrained=out_dir)`` and ``segment(out_dir, ...)`` load it;
``push_model(out_dir, repo)`` uploads it with ``huggingface_hub.upload_folder``. An existing
folder is only replaced when it is an earlier export (no other files are ever overwritten).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from echo_vlsm import __version__
from echo_vlsm.environment import git_commit
from echo_vlsm.errors import PathError
from echo_vlsm.grid import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, WEIGHTS_FILE
from echo_vlsm.inference.loading import ModelFolderError, _run_problem
from echo_vlsm.io import atomic_path, write_json_atomic, write_text_atomic
from echo_vlsm.models import EXPORT_FORMAT, exported_config, model_spec
from echo_vlsm.models.tokenizer import default_bpe_path
from echo_vlsm.paths import resolve
from echo_vlsm.structures import STRUCTURE_NAMES
from echo_vlsm.train import TrainConfig

#: The files of an exported model folder.
MODEL_CARD = "README.md"

CITATION = """\
@inproceedings{adhikari2023syntheticboost,
  title     = {Synthetic Boost: Leveraging Synthetic Data for Enhanced Vision-Language
               Segmentation in Echocardiography},
  author    = {Adhikari, Rabin and Dhakal, Manish and Thapaliya, Safal and Poudel, Kanchan
               and Bhandari, Prasiddha and Khanal, Bishesh},
  booktitle = {Simplifying Medical Ultrasound (ASMUS 2023)},
  series    = {Lecture Notes in Computer Science},
  publisher = {Springer},
  year      = {2023}
}"""

_ARCHITECTURE = {
    "clipseg": "CLIPSeg (Lüddecke & Ecker, CVPR 2022): a CLIP ViT image and text encoder with "
               "a light transformer decoder conditioned on the prompt (FiLM)",
    "cris": "CRIS (Wang et al., CVPR 2022): a CLIP ResNet-50 image and text encoder, a "
            "vision-language decoder and a text-to-pixel contrastive projector",
    "unet": "a text-free U-Net baseline (MONAI's nnU-Net-like DynUNet) predicting the three "
            "structures at once (softmax over background + 3); its prompt is the structure's "
            "name",
}
_STRATEGY = {
    "zeroshot": "no finetuning (the pretrained model, scored as it is)",
    "real": "finetuned on real images",
    "synthetic": "finetuned on synthetic images of the semantic diffusion model (SDM)",
    "synth-pt-real-ft": "pretrained on synthetic SDM images, then finetuned on real images",
    "mixed": "finetuned on real and synthetic SDM images together",
}


class ExportError(PathError):
    """An export target that would overwrite something other than an earlier export."""


def metrics_by_structure(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean (and standard deviation) of dice, IoU and HD95 per structure, with the count."""
    g = metrics.groupby("structure", sort=True)
    table = pd.DataFrame({
        "n": g.size(),
        "dice": g["dice"].mean(), "dice_sd": g["dice"].std(ddof=0),
        "iou": g["iou"].mean(),
        "hd95": g["hd95"].mean(),
    })
    return table.reset_index()


def model_card(config: TrainConfig, summary: dict, metrics: pd.DataFrame, spec) -> str:
    """The model card (README.md) of an exported run."""
    table = metrics_by_structure(metrics)
    rows = "\n".join(
        f"| {STRUCTURE_NAMES.get(r.structure, r.structure)} | {int(r.n)} | {r.dice:.1f} "
        f"± {r.dice_sd:.1f} | {r.iou:.1f} | {r.hd95:.1f} |" for r in table.itertuples())
    data = ("the built-in echo phantom (simulated apical 2CH/4CH views in the CAMUS layout; "
            "scores are not comparable to CAMUS)" if "phantom" in str(config.real_dir) else
            f"CAMUS (`{config.real_dir}`)")
    synth = (f"; synthetic images from `{config.synthetic_dir}`"
             if config.strategy in ("synthetic", "synth-pt-real-ft") else "")
    loss = (f'{config.setting("bce_weight"):g} x cross-entropy ({config.setting("loss")}, '
            f'recipe {config.recipe})')
    return f"""---
license: cc-by-4.0
library_name: echo-vlsm
pipeline_tag: image-segmentation
tags:
- echocardiography
- vision-language-segmentation
- {config.model}
- medical-imaging
---

# {config.run_id} ({config.model}, {config.size})

A vision-language segmentation model of the reproduction of *Synthetic Boost* (ASMUS 2023):
given an echocardiogram and a text prompt naming a structure (left-ventricular cavity,
myocardium, left atrium), it returns a probability map and a mask.

## Architecture
{_ARCHITECTURE[config.model]}; size `{config.size}`, input {spec.image_size} x
{spec.image_size} px, threshold {spec.threshold} on the sigmoid of the logits, CLIP encoders
**{config.encoders}** during finetuning.

## Training
- Data: {data}{synth}.
- Strategy `{config.strategy}`: {_STRATEGY[config.strategy]}.
- Prompt `{config.prompt}` (the study's P0..P7: P0 empty, P1 the structure, then view, phase,
  sex, age, image quality, shape), one of its two phrasings drawn per sample and epoch.
- Recipe: AdamW (lr {config.learning_rate:g}, weight decay {config.weight_decay:g}), Dice +
  {loss}, batch {config.global_batch_size}, at most {config.epochs}
  epochs; best epoch {summary.get("best_epoch")} (validation dice
  {float(summary.get("best_val_dice", float("nan"))):.1f}).
- The full training config is in `config.json` (`training_config`).

## Test metrics (real test split, per structure)
| structure | n | dice (%) | IoU (%) | HD95 (px at the stored size) |
|---|---|---|---|---|
{rows}

## Use
```python
import echo_vlsm
result = echo_vlsm.segment("path/to/this/folder", "echo.png",
                           "Left ventricular cavity of the heart.")
result.probability, result.mask      # at the image's own size
```
or `echo-vlsm segment path/to/this/folder echo.png --prompt "..." --out masks/ --overlay`.
`build_model("{config.model}", size="{config.size}", pretrained="path/to/this/folder")` gives
the bare module.

## Intended use
Research on vision-language segmentation of echocardiograms, and reproduction of the study.
**Not for clinical use**: it is not a medical device, was not validated on clinical data
beyond the test split above, and must not inform diagnosis or treatment.

## License
The weights: CC-BY 4.0. The code (echo-vlsm): MIT.

## Citation
```bibtex
{CITATION}
```

Exported by echo-vlsm {__version__} (commit {git_commit()}).
"""


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(out_dir, "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and exported_config(out_dir) is None:
        raise ExportError(out_dir, "exists, is not empty and is not an exported model folder; "
                                   "choose a new or empty folder (nothing was written)")


def export_model(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a complete run folder as a shareable model folder (module docstring); returns
    ``out_dir``. Relative paths are taken from the project root.

    Raises:
        ModelFolderError: ``run_dir`` is not a complete run.
        ExportError: ``out_dir`` holds something other than an earlier export.
    """
    run_dir, out_dir = resolve(run_dir), resolve(out_dir)
    problem = _run_problem(run_dir) if run_dir.is_dir() else "no such folder"
    if problem is not None:
        raise ModelFolderError(run_dir, f"{problem}; export a complete run folder "
                                        "(runs/<profile>/<run_id>)")
    _check_target(out_dir)
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    metrics = pd.read_csv(run_dir / METRICS_FILE, dtype={"sample": str})
    spec = model_spec(config.model, config.size)
    vocab = Path(default_bpe_path())

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        shutil.copyfile(run_dir / WEIGHTS_FILE, tmp)
    with atomic_path(out_dir / vocab.name) as tmp:
        shutil.copyfile(vocab, tmp)
    keep = ("best_epoch", "best_val_dice", "epochs_run", "test_dice", "n_train", "n_val",
            "n_test", "device", "precision")
    write_text_atomic(out_dir / MODEL_CARD, model_card(config, summary, metrics, spec))
    write_json_atomic(out_dir / CONFIG_FILE, {  # last: it marks the folder as an export
        "format": EXPORT_FORMAT, "format_version": 1,
        "model": config.model, "size": config.size, "encoders": config.encoders,
        "prompt": config.prompt, "strategy": config.strategy, "run_id": config.run_id,
        "spec": dataclasses.asdict(spec),
        "weights": WEIGHTS_FILE,
        "tokenizer": {"kind": "clip-bpe", "vocabulary": vocab.name,
                      "context_length": spec.context_length},
        "test_metrics": metrics_by_structure(metrics).to_dict(orient="records"),
        "summary": {k: summary[k] for k in keep if k in summary},
        "training_config": config.to_dict(),
        "echo_vlsm_version": __version__, "commit": git_commit(),
        "license": "cc-by-4.0",
    })
    return out_dir


def push_model(out_dir: str | os.PathLike, repo: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face hub repository ``repo`` (created if
    needed; needs a token, ``huggingface-cli login``). Returns the commit URL."""
    from huggingface_hub import HfApi

    out_dir = resolve(out_dir)
    if exported_config(out_dir) is None:
        raise ExportError(out_dir, "not an exported model folder (run export-model first)")
    api = HfApi()
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo, folder_path=str(out_dir), repo_type="model",
                             commit_message=f"echo-vlsm {__version__}: {out_dir.name}")
    return str(getattr(info, "commit_url", info))
