"""What a profile's grid costs in GPU hours, stated before it runs (``echo-vlsm plan``).

Per run: training triplets x epochs (``epochs_per_run``, capped by the profile's ``epochs``)
training steps, a validation pass per epoch and one test pass; zero-shot runs score only.
The FLOPs of one triplet come from ``torch.utils.flop_counter`` on the paper-size models
(forward and backward with the run's encoder setting; a batch of one on the CPU). Hours
follow from an assumed GPU throughput (``tflops``, at ``utilization``); where a
measured training rate exists (the study's recipe on one H200, ``MEASURED_IMG_S``) a second
estimate from it stands beside. Data sizes default to the study's (CAMUS 2019: 1600 / 400 /
200 images, x3 structures; synthetic 8000 / 1000) unless the profile's exported datasets
exist, then their ``records.csv`` counts. Each evaluation of a run on another dataset
(``evaluate_on``) is one test pass over that dataset's test split (``CROSS_TEST_TRIPLETS``
until it is exported), a row ``eval:<dataset>`` per model and encoder setting.
``gpu_hours_cached``: the same with the frozen cache (``train.frozen_cache``): a frozen-encoder
run pays its encoders' forward once (``frozen_cache_flops``), not at every step.
``gpu_hours_batched``: with the cache and image batching (``TrainConfig.image_batching``, off
in the study's recipes): a trained-encoder run's training steps run faster by the measured
factor ``IMAGE_BATCHING_SPEEDUP`` (frozen runs: the cached figure, the cache already encodes
each image once).

Examples::

    echo-vlsm plan --profile paper --tflops 990 --utilization 0.35
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from echo_vlsm.grid import BASELINE_MODELS
from echo_vlsm.paths import resolve
from echo_vlsm.pipeline.profiles import EVAL_PROMPTS, Profile
from echo_vlsm.structures import STRUCTURES

#: The study's data (reference facts): images per split.
STUDY_IMAGES = {"real": {"train": 1600, "val": 400, "test": 200},
                "synthetic": {"train": 8000, "val": 1000}}
#: Training images per second of the study's recipe (fp16, eager), one NVIDIA H200, random
#: weights (shared/reference): CLIPSeg at batch 128 (encoders without gradient, as in the
#: study's code), CRIS at batch 32 (trained encoders).
MEASURED_IMG_S = {("clipseg", "frozen"): 1857.0, ("cris", "trained"): 136.0}
#: The utilisation assumed for a model without a measured rate (the U-Net baseline): a
#: plain convolutional network at mixed precision; stated in the plan's text.
ASSUMED_UTILIZATION = 0.35
#: Test triplets of a dataset runs are evaluated on, before it is exported (reference facts):
#: EchoNet-Dynamic's 1277 test videos, two traced frames each, LV only; CAMUS's 200 test
#: images, three structures each.
CROSS_TEST_TRIPLETS = {"echonet": 2 * 1277, "camus": 200 * len(STRUCTURES)}


@dataclass(frozen=True)
class Assumptions:
    tflops: float = 989.0          # H100 / H200 SXM dense bf16 / fp16 peak
    utilization: float | None = None  # of the peak; None: implied by the measured rates
    epochs_per_run: int = 60       # until early stopping, on average (capped by the profile)


@lru_cache(maxsize=8)
def step_flops(model: str, encoders: str, size: str = "paper") -> tuple[float, float]:
    """(training FLOPs, inference FLOPs) of one image at ``size`` (a batch of one on the CPU,
    random weights: the count depends on shapes only), its text at CLIP's full 77 tokens: an
    upper bound, since training trims a split's tokens to its longest prompt
    (``train.triplets.trim_padding``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from echo_vlsm.models import build_model

    net = build_model(model, size, encoders=encoders)
    side = net.spec.image_size
    ids, mask = net.tokenize(["Left ventricular cavity in two-chamber view of the heart."])
    x = torch.zeros(1, 3, side, side)
    net.train()
    with FlopCounterMode(display=False) as train_count:
        net(x, ids, mask).float().mean().backward()
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as infer_count:
        net(x, ids, mask)
    return float(train_count.get_total_flops()), float(infer_count.get_total_flops())


def dataset_images(prof: Profile, root) -> dict[str, dict[str, int]]:
    """Images per split of the profile's real and synthetic sets: their records.csv where
    exported, else the study's numbers."""
    out = {k: dict(v) for k, v in STUDY_IMAGES.items()}
    for kind, key in (("real", "real_dir"), ("synthetic", "synthetic_dir")):
        folder = prof.train.get(key)
        records = resolve(folder, root) / "records.csv" if folder else None
        if records is not None and records.is_file():
            counts: dict[str, int] = {}
            with open(records, newline="") as f:
                for row in csv.DictReader(f):
                    counts[row["split"]] = counts.get(row["split"], 0) + 1
            out[kind] = counts
    return out


def cross_test_triplets(prof: Profile, dataset: str, root) -> int:
    """Test triplets of ``dataset`` as ``evaluate_on`` scores them: its exported
    ``records.csv`` (EchoNet: one LV triplet per image), else ``CROSS_TEST_TRIPLETS``."""
    folder = (prof.datasets.get(dataset) or {}).get("dataset_dir")
    records = resolve(folder, root) / "records.csv" if folder else None
    if records is None or not records.is_file():
        return CROSS_TEST_TRIPLETS[dataset]
    with open(records, newline="") as f:
        n = sum(row["split"] == "test" for row in csv.DictReader(f))
    return n if dataset == "echonet" else n * len(STRUCTURES)


def implied_utilization(model: str, assume: Assumptions) -> float:
    """The fraction of the GPU's peak that the measured training rate of ``model`` reaches
    (``MEASURED_IMG_S``); the assumption's own value when it gives one."""
    if assume.utilization is not None:
        return assume.utilization
    measured = [(e, v) for (m, e), v in MEASURED_IMG_S.items() if m == model]
    if not measured:
        return ASSUMED_UTILIZATION
    (enc, img_s), = measured
    return img_s * step_flops(model, enc)[0] / (989.0 * 1e12)


def training_images(run, images: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(training, validation) images of ``run``: the synthetic set, the real one (its
    ``real_fraction``), or both for ``mixed`` (validated on the real set)."""
    real_train = round(images["real"].get("train", 0) * run.real_fraction)
    real_val = round(images["real"].get("val", 0) * run.real_fraction)
    if run.strategy == "synthetic":
        return images["synthetic"].get("train", 0), images["synthetic"].get("val", 0)
    if run.strategy == "mixed":
        return real_train + images["synthetic"].get("train", 0), real_val
    return real_train, real_val


def plan_cost(prof: Profile, root, assume: Assumptions = Assumptions()):
    """A table per model, strategy and encoders: runs, training triplets and epochs per run,
    PFLOPs per run, and the GPU hours of all its runs at each model's utilisation."""
    import pandas as pd

    images = dataset_images(prof, root)
    n_struct = len(STRUCTURES)
    cap = int(prof.train.get("epochs") or assume.epochs_per_run)
    epochs = min(assume.epochs_per_run, cap)
    size = prof.train.get("size", "paper")
    rows = []
    for run in prof.runs:
        train_flops, infer_flops = step_flops(run.model, run.encoders, size)
        test = images["real"].get("test", 0) * n_struct
        if run.strategy == "zeroshot":
            train, val, n_epochs = 0, 0, 0
        else:
            train, val = (n * n_struct for n in training_images(run, images))
            n_epochs = epochs
        flops = n_epochs * (train * train_flops + val * infer_flops) + test * infer_flops
        cached = frozen_cache_flops(run, images, n_epochs, size)  # frozen: encoders once
        cached = flops if cached is None else cached + test * infer_flops
        batched = image_batching_flops(run, cached, n_epochs * train * train_flops, size)
        util = implied_utilization(run.model, assume)
        rows.append({"model": run.model, "strategy": run.strategy, "encoders": run.encoders,
                     "real_fraction": run.real_fraction, "train_triplets": train,
                     "epochs": n_epochs, "pflops": flops / 1e15,
                     "utilization": util,
                     "gpu_hours": flops / (assume.tflops * 1e12 * util) / 3600,
                     "gpu_hours_cached": cached / (assume.tflops * 1e12 * util) / 3600,
                     "gpu_hours_batched": batched / (assume.tflops * 1e12 * util) / 3600})
    for dataset in prof.evaluate_on:  # a test pass of each run whose prompt it can make
        test = cross_test_triplets(prof, dataset, root)
        for run in prof.runs:
            if run.prompt not in EVAL_PROMPTS.get(dataset, (run.prompt,)):
                continue
            flops = test * step_flops(run.model, run.encoders, size)[1]
            util = implied_utilization(run.model, assume)
            rows.append({"model": run.model, "strategy": f"eval:{dataset}",
                         "encoders": run.encoders, "real_fraction": run.real_fraction,
                         "train_triplets": 0, "epochs": 0, "pflops": flops / 1e15,
                         "utilization": util,
                         "gpu_hours": flops / (assume.tflops * 1e12 * util) / 3600,
                         "gpu_hours_cached": flops / (assume.tflops * 1e12 * util) / 3600,
                         "gpu_hours_batched": flops / (assume.tflops * 1e12 * util) / 3600})
    df = pd.DataFrame(rows)
    return df.groupby(["model", "strategy", "encoders", "real_fraction"], sort=False).agg(
        runs=("pflops", "size"), train_triplets=("train_triplets", "first"),
        epochs=("epochs", "first"), pflops_per_run=("pflops", "mean"),
        utilization=("utilization", "first"), gpu_hours=("gpu_hours", "sum"),
        gpu_hours_cached=("gpu_hours_cached", "sum"),
        gpu_hours_batched=("gpu_hours_batched", "sum")).reset_index()


def format_plan(table, prof: Profile, assume: Assumptions) -> str:
    """The plan as text: the assumptions, the table, the total."""
    util = ("the utilisation each model reaches in the measured training rates of the study's "
            "recipe on one H200 (CLIPSeg 1857 img/s, CRIS 136 img/s)"
            if assume.utilization is None else f"{assume.utilization:.0%} utilisation")
    if assume.utilization is None and set(table["model"]) - {m for m, _ in MEASURED_IMG_S}:
        util += f" ({ASSUMED_UTILIZATION:.0%} assumed for models without a measured rate)"
    return "\n".join([
        f"Plan of profile {prof.name}: {len(prof.runs)} runs{_evaluations(table)} at "
        f"{assume.tflops:.0f} peak "
        f"TFLOP/s and {util}; {assume.epochs_per_run} epochs per run (profile cap "
        f"{prof.train.get('epochs', '-')}); FLOPs counted with torch.utils.flop_counter.",
        table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"),
        f"total: {table['gpu_hours'].sum():,.1f} GPU hours",
        f"with the frozen cache: {table['gpu_hours_cached'].sum():,.1f} GPU hours "
        "(gpu_hours_cached: frozen-encoder runs train from their encoders' outputs computed "
        f"once, the one-off pass counted per run{_cache_share(table, prof)})",
        _batched_line(table, prof)])


def _cache_share(table, prof: Profile) -> str:
    """``; of a frozen training step the cache skips clipseg 96 %, ...``: the frozen
    encoders' share of a triplet's training FLOPs, the most the cache can save per step."""
    size = prof.train.get("size", "paper")
    frozen = table[(table["encoders"] == "frozen") & (table["epochs"] > 0)
                   & ~table["model"].isin(BASELINE_MODELS)]
    shares = [f"{m} {1 - cached_flops(m, size)['train'] / step_flops(m, 'frozen', size)[0]:.0%}"
              for m in sorted(set(frozen["model"]))]
    return f"; of a frozen training step it skips {', '.join(shares)}" if shares else ""


def _batched_line(table, prof: Profile) -> str:
    """The total with the cache and image batching, or why there is none."""
    size = prof.train.get("size", "paper")
    trained = table[(table["encoders"] == "trained") & (table["epochs"] > 0)
                    & ~table["model"].isin(BASELINE_MODELS)]
    missing = sorted(m for m in set(trained["model"]) if (m, size) not in IMAGE_BATCHING_SPEEDUP)
    if missing:
        return (f"with the frozen cache and image batching: no measured speed-up for "
                f"{', '.join(missing)} at size {size} (benchmarks/image_batching.py)")
    ratios = ", ".join(f"{m} {IMAGE_BATCHING_SPEEDUP[(m, size)]:.2f}x"
                       for m in sorted(set(trained["model"])))
    return (f"with the frozen cache and image batching: {table['gpu_hours_batched'].sum():,.1f}"
            f" GPU hours (gpu_hours_batched: trained-encoder training steps faster by the "
            f"ratio measured on a CPU at size {size}, {ratios or 'none'}; image_batching is "
            "off in the study's recipes)")


def _evaluations(table) -> str:
    """`` and N evaluations on other datasets`` when the plan has ``eval:`` rows."""
    n = int(table.loc[table["strategy"].str.startswith("eval:"), "runs"].sum())
    return f" and {n} evaluations on other datasets" if n else ""


# -- the frozen-encoder cache (train.frozen_cache) -------------------------------------------
#: Training images/s with image batching over without, trained encoders, per model and size:
#: ``benchmarks/image_batching.py`` on this project's 2-core CPU machine, shared (paper size:
#: 2 timed steps of 6 triplets each way; tiny: the demo's batch 16, 3 epochs), its section of
#: ``benchmarks/RESULTS.md``. The paper-size CPU ratios stand in for the GPU's until
#: ``benchmarks/gpu_check.sh`` measures them; a model and size without a measured ratio gets
#: no batched figure.
IMAGE_BATCHING_SPEEDUP: dict[tuple[str, str], float] = {
    ("clipseg", "paper"): 1.82, ("cris", "paper"): 3.20,
    ("clipseg", "tiny"): 1.17, ("cris", "tiny"): 1.01}

#: Distinct texts per triplet the frozen cache encodes at most: both phrasings of each (an
#: upper bound: a prompt key's texts repeat over images).
CACHE_TEXTS_PER_TRIPLET = 2


@lru_cache(maxsize=8)
def cached_flops(model: str, size: str = "paper") -> dict[str, float]:
    """FLOPs of a frozen-encoder run's parts with the frozen cache (``train.frozen_cache``),
    at ``size`` (a batch of one on the CPU, random weights): ``image`` and ``text``, the frozen
    encoders' forward of one image and one text (the cache's build); ``train`` (forward and
    backward) and ``infer`` (forward) of the rest of the model on one triplet's cached values."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from echo_vlsm.models import build_model

    net = build_model(model, size, encoders="frozen")
    side = net.spec.image_size
    ids, mask = net.tokenize(["Left ventricular cavity in two-chamber view of the heart."])
    flops = {}
    net.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as count:
            image = net.encode_frozen_image(torch.zeros(1, 3, side, side))
        flops["image"] = count.get_total_flops()
        with FlopCounterMode(display=False) as count:
            text = net.encode_frozen_text(ids, mask)
        flops["text"] = count.get_total_flops()
        with FlopCounterMode(display=False) as count:
            net.forward_encoded(image, text, mask, side)
        flops["infer"] = count.get_total_flops()
    net.train()
    with FlopCounterMode(display=False) as count:
        net.forward_encoded(image, text, mask, side).float().mean().backward()
    flops["train"] = count.get_total_flops()
    return {k: float(v) for k, v in flops.items()}


def image_batching_flops(run, cached: float, train_flops: float, size: str) -> float:
    """A run's FLOPs with the frozen cache and image batching: ``cached`` (the figure with
    the cache) with its training steps' ``train_flops`` divided by the measured speed-up
    (``IMAGE_BATCHING_SPEEDUP``) for a text-prompted model with trained encoders; ``cached``
    as it is elsewhere (frozen: the cache encodes each image once already; the U-Net
    refuses the option) or without a measured ratio."""
    speedup = IMAGE_BATCHING_SPEEDUP.get((run.model, size))
    if run.encoders != "trained" or run.model in BASELINE_MODELS or speedup is None:
        return cached
    return cached - train_flops * (1.0 - 1.0 / speedup)


def frozen_cache_flops(run, images: dict[str, dict[str, int]], epochs: int,
                       size: str = "paper") -> float | None:
    """The training FLOPs of ``run`` with the frozen cache: its epochs of training and
    validation on the cached values, plus the cache's one-off build (one pass of the frozen
    encoders over its training and validation images and at most ``CACHE_TEXTS_PER_TRIPLET``
    texts per triplet); None where the cache does not apply (trained encoders, zero-shot,
    the text-free baseline). The test pass is the whole model's, as without the cache."""
    if run.encoders != "frozen" or run.strategy == "zeroshot" or run.model in BASELINE_MODELS:
        return None
    f = cached_flops(run.model, size)
    train_images, val_images = training_images(run, images)
    n_struct = len(STRUCTURES)
    texts = CACHE_TEXTS_PER_TRIPLET * n_struct * (train_images + val_images)
    return (epochs * n_struct * (train_images * f["train"] + val_images * f["infer"])
            + (train_images + val_images) * f["image"] + texts * f["text"])
