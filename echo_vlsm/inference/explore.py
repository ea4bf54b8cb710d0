"""Explore trained models (notebook 07): one test image, a prompt, the mask and its dice;
two runs or two prompts side by side; the images where they disagree most.

The same functions draw the static figures (papermill, ``reproduce``) and feed the
interactive explorer (:func:`explorer`, ipywidgets in JupyterLab, Binder, Colab).

Examples::

    runs = list_runs("runs/demo")                    # complete runs with their test dice
    items = test_items("data/phantom")               # the test split's triplets
    view = compare(["runs/demo/a", "runs/demo/b"], "data/phantom", items[0], ["p1"])
    figure_of(view)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echo_vlsm.grid import METRICS_FILE, SUMMARY_FILE, parse_run_id, run_complete
from echo_vlsm.inference.loading import LoadedModel, load_model
from echo_vlsm.inference.segment import Segmentation, overlay, segment
from echo_vlsm.io import read_png
from echo_vlsm.paths import resolve
from echo_vlsm.prompts import read_tasks
from echo_vlsm.train.metrics import segmentation_metrics


def list_runs(runs_root: str | os.PathLike) -> pd.DataFrame:
    """The complete runs under ``runs_root``: ``run_id, model, strategy, encoders, prompt,
    test_dice, path``, best test dice first."""
    root = resolve(runs_root)
    rows = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or not run_complete(folder):
            continue
        try:
            run = parse_run_id(folder.name)
        except ValueError:
            continue
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        dice = summary.get("test_dice")
        if dice is None:
            dice = float(pd.read_csv(folder / METRICS_FILE)["dice"].mean())
        rows.append({"run_id": folder.name, "model": run.model, "strategy": run.strategy,
                     "encoders": run.encoders, "prompt": run.prompt,
                     "test_dice": float(dice), "path": str(folder)})
    table = pd.DataFrame(rows, columns=["run_id", "model", "strategy", "encoders", "prompt",
                                        "test_dice", "path"])
    return table.sort_values(["test_dice", "run_id"], ascending=[False, True],
                             ignore_index=True)


def counterpart(runs: pd.DataFrame, run_id: str) -> str | None:
    """The run to compare ``run_id`` with: the same model, encoders and prompt under the
    other of ``real`` / ``synth-pt-real-ft`` (the study's question), else the best other."""
    row = runs.set_index("run_id").loc[run_id]
    other = {"real": "synth-pt-real-ft", "synth-pt-real-ft": "real"}.get(row.strategy, "real")
    same = runs[(runs.model == row.model) & (runs.encoders == row.encoders)
                & (runs.prompt == row.prompt) & (runs.strategy == other)]
    if len(same):
        return str(same.run_id.iloc[0])
    rest = runs[runs.run_id != run_id]
    return str(rest.run_id.iloc[0]) if len(rest) else None


def test_items(dataset_dir: str | os.PathLike, split: str = "test") -> pd.DataFrame:
    """The triplets of a split's task file: ``sample, structure, view, phase, img_name,
    mask_name`` and the task itself (``task``, for prompt keys)."""
    rows = []
    for task in read_tasks(resolve(dataset_dir), split):
        attrs = task.get("attributes") or {}
        rows.append({"sample": str(attrs.get("stem") or Path(task["img_name"]).stem),
                     "structure": task.get("structure") or attrs.get("structure"),
                     "view": attrs.get("view"), "phase": attrs.get("phase"),
                     "img_name": task["img_name"], "mask_name": task["mask_name"],
                     "task": task})
    return pd.DataFrame(rows)


@dataclass
class Panel:
    """One model and prompt on one image: the segmentation and its dice against the label."""

    title: str
    result: Segmentation
    label: np.ndarray
    dice: float


def _attributes(task: dict) -> dict:
    attrs = dict(task.get("attributes") or {})
    keep = ("structure", "view", "phase", "sex", "age", "quality", "shape")
    return {k: attrs[k] for k in keep if attrs.get(k) not in (None, "")}


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    return float(segmentation_metrics(pred[None], label[None])["dice"][0])


def panel(model, dataset_dir, item, prompt: str, phrasing: int = 0,
          title: str | None = None) -> Panel:
    """Segment ``item`` (a row of :func:`test_items`) with ``prompt`` (a key, using the
    image's attributes, or a free text) and score it against the item's label mask."""
    root = resolve(dataset_dir)
    loaded = load_model(model)
    result = segment(loaded, root / item["img_name"], prompt,
                     attributes=_attributes(item["task"]), phrasing=phrasing)
    label = read_png(root / item["mask_name"]) > 127
    name = title or Path(loaded.source).name
    return Panel(f"{name}\n{prompt}", result, label, _dice(result.mask, label))


def compare(models, dataset_dir, item, prompts) -> list[Panel]:
    """Panels of every model x prompt on one item (two runs, or two prompts, side by side)."""
    return [panel(m, dataset_dir, item, p) for m in models for p in prompts]


def disagreement(model_a, model_b, dataset_dir, items: pd.DataFrame, prompt_a: str,
                 prompt_b: str | None = None, n: int | None = None,
                 images: int | None = None) -> pd.DataFrame:
    """Per item the dice of A and of B against the label, and their agreement (dice of A's
    mask against B's); most disagreeing first (``n`` rows, default all). ``images``: only the
    items of the first that many test images (a rehearsal's ``fast_dev_run``)."""
    a, b = load_model(model_a), load_model(model_b)
    if images is not None:
        items = items[items["sample"].isin(list(dict.fromkeys(items["sample"]))[:images])]
    rows = []
    for i, item in items.iterrows():
        pa = panel(a, dataset_dir, item, prompt_a)
        pb = panel(b, dataset_dir, item, prompt_b or prompt_a)
        rows.append({"item": i, "sample": item["sample"], "structure": item["structure"],
                     "dice_a": pa.dice, "dice_b": pb.dice,
                     "agreement": _dice(pa.result.mask, pb.result.mask)})
    table = pd.DataFrame(rows).sort_values(["agreement", "item"], ignore_index=True)
    return table.head(n) if n else table


def figure_of(panels: list[Panel], size: float = 3.6):
    """The panels in a row: the image with the label (green outline) and the mask (red)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.6),
                             squeeze=False)
    for ax, p in zip(axes[0], panels):
        picture = overlay(p.result.image, p.result.mask)
        ax.imshow(picture)
        ax.contour(p.label, levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"{p.title}\ndice {p.dice:.1f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def explorer(runs: pd.DataFrame, dataset_dir, items: pd.DataFrame, run_a: str,
             run_b: str | None, prompt: str = "p1", prompt_b: str | None = None,
             device: str | None = None, start: int = 0, trust_weights: bool = False):
    """The interactive explorer (ipywidgets): pick two runs, a test image and structure,
    a prompt key or a free text; the panels redraw on every change. ``start``: the row of
    ``items`` shown first; ``trust_weights``: as ``load_model`` takes it (a zero-shot CRIS run
    on OpenAI's ``RN50.pt``). Returns the widget."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    from echo_vlsm.grid import PROMPT_KEYS

    cache: dict[str, LoadedModel] = {}

    def model(run_id):
        if run_id not in cache:
            cache[run_id] = load_model(runs.set_index("run_id").loc[run_id, "path"], device,
                                       trust_weights=trust_weights)
        return cache[run_id]

    ids = list(runs.run_id)
    labels = [f"{r.sample} {r.structure}" for r in items.itertuples()]
    keys = [*PROMPT_KEYS, "free text"]
    w_a = W.Dropdown(options=ids, value=run_a, description="run A")
    w_b = W.Dropdown(options=["(none)", *ids], value=run_b or "(none)", description="run B")
    w_item = W.Dropdown(options=list(zip(labels, range(len(items)))), value=int(start),
                        description="image")
    w_key = W.Dropdown(options=keys, value=prompt if prompt in keys else "free text",
                       description="prompt")
    w_key_b = W.Dropdown(options=["(same)", *keys], value=prompt_b or "(same)",
                         description="prompt B")
    w_text = W.Text(value="" if prompt in keys else prompt, description="text",
                    placeholder="a free text prompt", layout=W.Layout(width="60%"))
    status = W.HTML()
    out = W.Output()

    def text_of(key):
        return w_text.value if key == "free text" else key

    def redraw(*_):
        item = items.iloc[w_item.value]
        pa = text_of(w_key.value)
        pb = pa if w_key_b.value == "(same)" else text_of(w_key_b.value)
        try:
            panels = [panel(model(w_a.value), dataset_dir, item, pa, title=w_a.value)]
            if w_b.value != "(none)" or pb != pa:
                other = w_a.value if w_b.value == "(none)" else w_b.value
                panels.append(panel(model(other), dataset_dir, item, pb, title=other))
            status.value = " | ".join(f"<b>{p.title.splitlines()[0]}</b>: dice {p.dice:.1f} "
                                      f"(prompt: <i>{p.result.prompt or '(empty)'}</i>)"
                                      for p in panels)
        except (ValueError, KeyError) as err:
            status.value = f"<span style='color:#b00'>{err}</span>"
            return
        with out:
            out.clear_output(wait=True)
            fig = figure_of(panels)
            display(fig)
            plt.close(fig)

    for w in (w_a, w_b, w_item, w_key, w_key_b, w_text):
        w.observe(redraw, names="value")
    redraw()
    box = W.VBox([W.HBox([w_a, w_b]), W.HBox([w_item, w_key, w_key_b]), w_text, status, out])
    box.add_class("echo-vlsm-explorer")
    return box
