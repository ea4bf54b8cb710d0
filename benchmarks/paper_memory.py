"""Host (and, on a GPU, device) peak memory of paper-size training runs at the real data's size.

The study's data: CAMUS 2019, 400 training patients x 4 images (1600 real training images),
50 validation patients (200 images), 50 test patients (200 images x 3 structures = 600 test
triplets), and 5 SDM images per real label map (8000 synthetic training images, 1000
synthetic validation images). ``build`` writes a stand-in of exactly that size once, under
``--root`` (default ``data/bench-paper-scale``, git-ignored), through the paper profile's own
path: a phantom CAMUS 2019 tree of 500 patients -> ``export_dataset`` at 512 px -> task files;
a released-SDM-CAMUS-layout folder made from the phantom's images (the real image plus noise,
``echo_vlsm.rehearsal.write_released_standin``, 5 per map) -> ``import_released`` -> task
files. The synthetic images are not SDM-made; memory depends on the number of images and
their size only, which are those of the study. Each step is skipped once done (a marker
``.bench-done-<step>.json`` records its settings) and the steps below resume themselves.

``measure`` trains, in a fresh subprocess per run, paper-size models with random weights
(``pretrained: None``) under ``fast_dev_run`` (a few batches of one epoch, a few validation
batches, a few test images) and records that process's peak RSS (``getrusage`` of the child,
and /proc polling), and, on CUDA, ``torch.cuda.max_memory_allocated``. Each run's peak is
broken down into:

* the decoded-data caches: 2 bytes per pixel per unique image at the model's input side
  (416 px CRIS, 352 px CLIPSeg) for the train and validation splits and the test split, the
  test split's full-size (512 px) mask bits and the tokens - computed from the tensors;
* the model part: a separate subprocess that builds the model and its AdamW, then runs
  training steps at the same batch on random inputs (no data), minus the bare interpreter;
* the rest: the run's peak minus the two, minus the bare interpreter (torch imported).

On a CPU, model, activations and data caches all live in host memory, so the CPU figure is an
upper bound of a GPU run's host peak: there the model, optimiser, activations and the
training caches go to the GPU (``load_triplets(device=...)`` moves them, the host copies are
dropped when it returns; only the test split's 512 px masks stay on the host).

    python benchmarks/paper_memory.py build                  # once, ~20-40 min on 2 cores
    python benchmarks/paper_memory.py measure    # the runs (GPU: study batches); RESULTS.md
    python benchmarks/paper_memory.py measure --device cpu --work /tmp/pm  # keeps its logs
    python benchmarks/paper_memory.py measure --only cris:synthetic --batch cris=8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GIB = 1024 ** 3
TARGET_HOST_GB = 16.0  # decimal GB, as the issue states it
TARGET_GPU_GIB = 40.0
#: The study's data: patients per split (CAMUS 2019) and SDM images per real label map.
N_PATIENTS, N_PER_MAP = 500, 5
EXPECTED = {"real": {"train": 1600, "val": 200, "test": 200},
            "synthetic": {"train": 8000, "val": 1000}}
STUDY_BATCH = {"clipseg": 128, "cris": 32}
#: Batches that fit this 24 GiB CPU machine (the rehearsal: CRIS at 32 needs > 22 GB here).
CPU_BATCH = {"clipseg": 16, "cris": 4}
STRATEGIES = ("synthetic", "synth-pt-real-ft", "real")


# -- the stand-in ---------------------------------------------------------------------------
def _done(root: Path, step: str, settings: dict) -> bool:
    marker = root / f".bench-done-{step}.json"
    return marker.is_file() and json.loads(marker.read_text()) == settings


def _mark(root: Path, step: str, settings: dict) -> None:
    from echo_vlsm.io import write_json_atomic

    write_json_atomic(root / f".bench-done-{step}.json", settings)


def build(root: Path, workers: int) -> dict[str, Path]:
    """Write (or complete) the stand-in under ``root``; returns its dataset folders."""
    from tqdm import tqdm

    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.data.phantom import write_phantom
    from echo_vlsm.prompts import write_tasks
    from echo_vlsm.rehearsal import write_released_standin
    from echo_vlsm.sdm.released import import_released

    root.mkdir(parents=True, exist_ok=True)
    paths = {"camus": root / "camus-2019", "real": root / "camus",
             "released": root / "sdm-camus", "synthetic": root / "camus-synthetic"}
    settings = {"n_patients": N_PATIENTS, "n_per_map": N_PER_MAP, "seed": 0, "size": 512}

    def phantom():
        write_phantom(paths["camus"], n_patients=N_PATIENTS, seed=0, layout="2019",
                      workers=workers)

    def real():
        export_dataset(read_camus(paths["camus"]), paths["real"], size=512, workers=workers)
        write_tasks(paths["real"], "camus")

    def released():
        # written under a temporary name, renamed when complete (the writer does not resume)
        tmp = paths["released"].with_name(paths["released"].name + ".partial")
        write_released_standin(paths["camus"], tmp, n_per_map=N_PER_MAP, size=256)
        if paths["released"].exists():
            import shutil
            shutil.rmtree(paths["released"])
        os.replace(tmp, paths["released"])

    def synthetic():
        import_released(paths["released"], paths["synthetic"], real_dir=paths["real"], size=512)
        write_tasks(paths["synthetic"], "synthetic")

    steps = [("phantom", phantom), ("real", real), ("released", released),
             ("synthetic", synthetic)]
    bar = tqdm(steps, desc="paper-scale stand-in", unit="step", disable=None)
    for name, fn in bar:
        bar.set_postfix_str(name)
        if not _done(root, name, settings):
            fn()
            _mark(root, name, settings)
    check(paths)
    return paths


def check(paths: dict[str, Path]) -> dict:
    """Images per split of the stand-in, checked against the study's counts."""
    from echo_vlsm.dataset import read_records

    counts = {}
    for kind in ("real", "synthetic"):
        split = read_records(paths[kind])["split"].value_counts().to_dict()
        counts[kind] = {k: int(split.get(k, 0)) for k in EXPECTED[kind]}
        if counts[kind] != EXPECTED[kind]:
            raise SystemExit(f"{paths[kind]}: images per split {counts[kind]}, expected "
                             f"{EXPECTED[kind]}")
    return counts


# -- one measured run (in its own process) --------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Poller:
    """Peak RSS of this process, sampled every ``interval`` s in a thread (beside getrusage,
    which gives the true maximum but not when it happened)."""

    def __init__(self, interval: float = 0.05):
        self.peak, self.interval, self._stop = _rss(), interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss())


def _cuda_peak(device) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


def _child_baseline() -> dict:
    import torch  # noqa: F401  - what every child has imported

    import echo_vlsm.train  # noqa: F401
    return {"rss": _rss(), "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def child_fit(args) -> dict:
    """A fast_dev_run of one paper-size run on the stand-in; returns the peaks and the sizes
    of the decoded splits it held."""
    from echo_vlsm.device import resolve_device
    from echo_vlsm.train import TrainConfig, fit

    base = _child_baseline()
    device = resolve_device(args.device)
    out = Path(args.runs)
    common = dict(model=args.model, size="paper", pretrained=None, prompt="p3",
                  encoders=args.encoders, batch_size=args.batch, epochs=1,
                  fast_dev_run=args.fdr, device=str(device), real_dir=args.real,
                  synthetic_dir=args.synthetic, runs_root=str(out), precision="auto",
                  cache_dir=args.cache)
    if args.strategy == "synth-pt-real-ft":
        # its start: the synthetic run's weights (not measured: its own row)
        init = out / "init.safetensors"
        if not init.is_file():
            from echo_vlsm.models import build_model
            from echo_vlsm.train.checkpoint import save_weights

            init.parent.mkdir(parents=True, exist_ok=True)
            m = build_model(args.model, size="paper", pretrained=None, encoders=args.encoders)
            save_weights(m, init)
            del m
        common["init_from"] = str(init)
    config = TrainConfig(strategy=args.strategy, **common)
    poll = _Poller()
    t0 = time.perf_counter()
    result = fit(config, progress=False)
    seconds = time.perf_counter() - t0
    peak_poll = poll.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"base": base, "peak_rss": maxrss, "peak_poll": peak_poll, "seconds": seconds,
            "cuda_peak_gib": _cuda_peak(device), "device": str(device),
            "n_train": result.summary.get("n_train"), "n_val": result.summary.get("n_val"),
            "n_test": result.summary.get("n_test")}


def child_data(args) -> dict:
    """The decoded splits a run holds (train, val at the model's size; test with its 512 px
    masks), loaded as ``fit`` loads them, to ``--data-device`` (``cpu``; ``meta`` stands for
    a GPU: what the host keeps once the tensors are moved): their bytes and the RSS growth."""
    from echo_vlsm.models import model_spec
    from echo_vlsm.train.triplets import load_triplets

    base = _child_baseline()
    spec = model_spec(args.model, "paper")
    tokenize = _tokenizer(args.model)
    train_dir = args.synthetic if args.strategy == "synthetic" else args.real
    sizes, held = {}, []
    for split, folder, full in (("val", train_dir, False), ("train", train_dir, False),
                                ("test", args.real, True)):
        data = load_triplets(folder, split, "p3", spec.image_size, tokenize,
                             cache_dir=args.cache, full_masks=full, progress=False,
                             device=args.data_device or "cpu")
        tensors = {"images": data.images, "masks": data.masks, "full_masks": data.full_masks,
                   "tokens": [data.input_ids, data.attention_mask]}
        sizes[split] = {"n_images": int(data.images.shape[0]), "triplets": len(data),
                        **{k: _nbytes(v) for k, v in tensors.items()}}  # bytes
        held.append(data)
    return {"base": base, "rss_after": _rss(),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "sizes": sizes, "image_size": spec.image_size}


def child_model(args) -> dict:
    """Model, AdamW and ``--steps`` training steps at ``--batch`` on random inputs: the
    model part of a run's peak, without any data."""
    import torch

    from echo_vlsm.device import resolve_device, resolve_precision
    from echo_vlsm.train import TrainConfig, build, make_optimizer, train_step
    from echo_vlsm.train.losses import make_loss
    from echo_vlsm.train.triplets import normalise

    base = _child_baseline()
    device = resolve_device(args.device)
    config = TrainConfig(model=args.model, size="paper", pretrained=None,
                         encoders=args.encoders, batch_size=args.batch, device=str(device))
    precision = resolve_precision(config.precision, device)
    model = build(config, device)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    after_build = _rss()
    params_list, optimizer, _, scaler = make_optimizer(config, model, device, precision)
    criterion = make_loss(config.setting("loss"), config.dice_weight,
                          float(config.setting("bce_weight")))
    s = model.spec.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, s, s), dtype=torch.uint8, generator=g)
    masks = torch.rand(args.batch, s, s, generator=g) > 0.7
    ids, attn = model.tokenize(["Left ventricular cavity of the heart."] * args.batch)
    images, masks, ids, attn = (t.to(device) for t in (images, masks, ids, attn))
    poll = _Poller()
    model.train()
    for _ in range(args.steps):
        pixel_values = normalise(images, model.spec.mean, model.spec.std,
                                 channels_last=config.channels_last)
        train_step(model, pixel_values, ids, attn, masks, criterion, optimizer, scaler,
                   params_list, config.grad_clip, precision)
    peak_poll = poll.stop()
    return {"base": base, "after_build": after_build, "peak_poll": peak_poll,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "param_bytes": params, "trainable_bytes": trainable,
            "cuda_peak_gib": _cuda_peak(device), "device": str(device)}


def child_baseline(args) -> dict:
    return _child_baseline() | {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                * 1024}


def _tokenizer(model: str):
    """``model.tokenize`` without building the model: both models tokenize with CLIP's BPE
    at their spec's context length (``TokenizerMixin``)."""
    from echo_vlsm.models import model_spec
    from echo_vlsm.models.tokenizer import ClipTokenizer

    return ClipTokenizer(model_spec(model, "paper").context_length)


def _nbytes(x) -> int:
    if x is None:
        return 0
    if isinstance(x, list):
        return sum(_nbytes(t) for t in x)
    return int(x.numel() * x.element_size())


CHILDREN = {"fit": child_fit, "data": child_data, "model": child_model,
            "baseline": child_baseline}


# -- the parent: runs, breakdown, RESULTS.md --------------------------------------------------
def run_child(kind: str, log: Path, **opts) -> dict:
    """``kind`` in a fresh interpreter; its JSON answer, plus the peak RSS the parent saw
    (psutil polling of the child every 0.1 s)."""
    import psutil

    out = log.with_suffix(".json")
    if out.is_file():  # measured before in this --work folder: a rerun resumes
        return json.loads(out.read_text())
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", kind, "--out", str(out)]
    for key, value in opts.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        proc, seen = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                seen = max(seen, proc.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.1)
    if child.returncode != 0:
        raise SystemExit(f"{kind} {opts} failed (exit {child.returncode}); see {log}:\n"
                         + log.read_text()[-3000:])
    answer = json.loads(out.read_text())
    answer["parent_seen_rss"] = seen
    answer["wall_s"] = time.perf_counter() - t0
    out.write_text(json.dumps(answer, default=str))
    return answer


def _gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def measure(args) -> dict:
    import torch

    root = ROOT / args.root if not Path(args.root).is_absolute() else Path(args.root)
    paths = {"real": root / "camus", "synthetic": root / "camus-synthetic"}
    counts = check(paths)
    work = Path(args.work or tempfile.mkdtemp(prefix="paper-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    batches = dict(STUDY_BATCH if cuda else CPU_BATCH)
    for item in args.batch:
        name, value = item.split("=")
        batches[name] = int(value)
    only = set(args.only) if args.only else None
    cache = root / ".cache"  # one decoded cache for every run (the first run fills it)
    common = dict(real=paths["real"], synthetic=paths["synthetic"], cache=cache,
                  device=args.device, encoders=args.encoders)
    results = {"baseline": run_child("baseline", work / "baseline.log", **common),
               "counts": counts, "batches": batches, "runs": {}, "models": {}, "data": {}}
    for model in ("clipseg", "cris"):
        b = batches[model]
        if only and not any(o.startswith(model) for o in only):
            continue
        for train in ("synthetic", "real"):
            strategy = "synthetic" if train == "synthetic" else "real"
            for dev in ("cpu", "meta"):
                key = f"{model}:{train}:{dev}"
                print(f"data {key}", flush=True)
                results["data"][key] = run_child("data", work / f"data-{model}-{train}-{dev}.log",
                                                 model=model, strategy=strategy, batch=b,
                                                 data_device=dev, **common)
        for bb in sorted({max(1, b // 2), b}):
            print(f"model {model} batch {bb}", flush=True)
            results["models"][f"{model}:{bb}"] = run_child(
                "model", work / f"model-{model}-{bb}.log", model=model, batch=bb,
                steps=args.fdr, **common)
        for strategy in STRATEGIES:
            key = f"{model}:{strategy}"
            if only and key not in only and model not in only:
                continue
            print(f"fit {key} batch {b}", flush=True)
            results["runs"][key] = run_child(
                "fit", work / f"fit-{model}-{strategy}.log", model=model, strategy=strategy,
                batch=b, fdr=args.fdr, runs=work / "runs" / f"{model}-{strategy}", **common)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"raw results: {work / 'results.json'}")
    return results


def report(results: dict, args) -> str:
    from benchmarks._results import machine

    base = results["baseline"]["rss"]
    rows, gpu_rows = [], []
    for key, r in results["runs"].items():
        model, strategy = key.split(":")
        b = results["batches"][model]
        train = "synthetic" if strategy == "synthetic" else "real"
        d = results["data"][f"{model}:{train}:cpu"]
        data_bytes = sum(v["images"] + v["masks"] + v["full_masks"] + v["tokens"]
                         for v in d["sizes"].values())
        m = results["models"][f"{model}:{b}"]
        model_part = m["peak_rss"] - m["base"]["rss"]
        peak = max(r["peak_rss"], r.get("parent_seen_rss", 0))
        rest = peak - r["base"]["rss"] - data_bytes - model_part
        # linear in the batch: the activations (two model runs at b/2 and b)
        small = results["models"].get(f"{model}:{max(1, b // 2)}")
        study = STUDY_BATCH[model]
        if small is not None and small is not m and study != b:
            small_part = small["peak_rss"] - small["base"]["rss"]
            per = (model_part - small_part) / (b - max(1, b // 2))
            at_study = peak + per * (study - b)
            extrap = f"{_gib(at_study)} (+{per / 2 ** 20:.0f} MiB per sample)"
        else:
            at_study, extrap = peak, "-"
        verdict = "under" if peak < TARGET_HOST_GB * 1e9 else "OVER"
        # a GPU run's host, from the parts (the CUDA context and libraries not included):
        # the interpreter, what the splits leave on the host, and the largest transient of
        # model built on the host, one split before its move, the state snapshot
        meta = results["data"].get(f"{model}:{train}:meta")
        if meta is not None:
            kept = meta["rss_after"] - meta["base"]["rss"]
            loading = meta["peak_rss"] - meta["base"]["rss"]
            snapshot = m["param_bytes"] + 2 * m["trainable_bytes"]
            gpu_host = r["base"]["rss"] + max(loading, kept + snapshot, kept + m["param_bytes"])
            gpu_host_cell = _gib(gpu_host)
        else:
            gpu_host_cell = "-"
        rows.append(f"| {model} | {strategy} | {b} | {r['n_train']} / {r['n_val']} / "
                    f"{r['n_test']} | {_gib(peak)} | {_gib(r['base']['rss'])} | "
                    f"{_gib(data_bytes)} | {_gib(model_part)} | {_gib(rest)} | "
                    f"{verdict} 16 GB | {extrap} | {gpu_host_cell} | {r['seconds']:.0f} |")
        if r.get("cuda_peak_gib") is not None:
            gpu_rows.append(f"| {model} | {strategy} | {b} | {r['cuda_peak_gib']:.2f} | "
                            f"{'within' if r['cuda_peak_gib'] < TARGET_GPU_GIB else 'OVER'} 40 |")
    data_rows = []
    for key, d in results["data"].items():
        model, train, dev = key.split(":")
        if dev != "cpu":
            continue
        meta = results["data"].get(f"{model}:{train}:meta")
        cells = []
        for split in ("train", "val", "test"):
            v = d["sizes"][split]
            n_img = v.get("n_images", v["images"] // d["image_size"] ** 2)
            cells.append(f"{n_img} img / {v['triplets']} tri: "
                         f"{_gib(v['images'] + v['masks'] + v['full_masks'] + v['tokens'])}")
        total = sum(v["images"] + v["masks"] + v["full_masks"] + v["tokens"]
                    for v in d["sizes"].values())
        meta_cells = (f"{_gib(meta['rss_after'] - meta['base']['rss'])} | "
                      f"{_gib(meta['peak_rss'] - meta['base']['rss'])}") if meta else "- | -"
        data_rows.append(f"| {model} ({d['image_size']} px) | {train} | {' | '.join(cells)} | "
                         f"{_gib(total)} | {_gib(d['rss_after'] - d['base']['rss'])} | "
                         f"{meta_cells} |")
    model_rows = []
    for key, m in results["models"].items():
        model, b = key.split(":")
        p, t = m["param_bytes"], m["trainable_bytes"]
        model_rows.append(f"| {model} | {b} | {_gib(p)} | {_gib(p + 3 * t)} | "
                          f"{_gib(m['after_build'] - m['base']['rss'])} | "
                          f"{_gib(m['peak_rss'] - m['base']['rss'])} |"
                          + (f" {m['cuda_peak_gib']:.2f} |" if m.get("cuda_peak_gib") is not None
                             else " - |"))
    c = results["counts"]
    gpu = ("\n".join(["| model | strategy | batch | `max_memory_allocated` GiB | 40 GB card |",
                      "|---|---|---|---|---|", *gpu_rows]) if gpu_rows else
           "GPU memory: **unmeasured** (no GPU in this run). On a GPU, `python "
           "benchmarks/paper_memory.py measure` runs the study's batch sizes "
           "(CLIPSeg 128, CRIS 32) and adds `torch.cuda.max_memory_allocated` per run here.")
    device = next(iter(results['runs'].values()), {}).get('device', args.device)
    run_head = ("| model | strategy | batch | triplets train / val / test | peak RSS GiB | "
                "interpreter | decoded data | model + AdamW + steps | rest | "
                "target (16 GB = 14.90 GiB) | CPU peak at the study's batch, extrapolated | "
                "host peak with `device: cuda`, estimated | s |")
    data_head = ("| model | train set | train | val | test | total GiB | RSS growth, on the CPU | "
                 "host RSS kept after moving to a device (`meta`) | "
                 "host peak while loading (`meta`) |")
    return f"""## Memory at the real scale (`benchmarks/paper_memory.py`)

Machine: {machine()}; {os.cpu_count()} cores, {_gib(_total_ram())} GiB RAM; device
`{device}`. Stand-in of the study's size (built by `paper_memory.py build`): real
{c['real']['train']} train / {c['real']['val']} val / {c['real']['test']} test images (a
phantom CAMUS 2019 tree of 500 patients through `export_dataset` at 512 px; 600 test
triplets), synthetic {c['synthetic']['train']} train / {c['synthetic']['val']} val images
(5 per real label map, imported through `import_released` from a released-SDM-CAMUS-layout
folder made from the phantom images plus noise: not SDM images, but memory depends on the
number and size of the images only, which are the study's). Each run: paper size, random
weights (`pretrained: None`), {args.encoders} encoders, prompt p3, `fast_dev_run={args.fdr}`
({args.fdr} training batches, {args.fdr} validation batches, the test triplets of {args.fdr}
images), as-published recipe, in a fresh process; peak RSS = the process's `ru_maxrss`
(and the parent's 0.1 s polling, the larger). Bare interpreter (torch and `echo_vlsm.train`
imported): {_gib(base)} GiB.

{run_head}
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Breakdown: *decoded data* = the bytes of the tensors the run holds (train and validation
splits at the model's input side, 2 bytes per pixel per unique image; the test split with its
512 px mask bits; the tokens), from a separate process that loads them as `fit` does; *model +
AdamW + steps* = a separate process that builds the model and its AdamW and runs
{args.fdr} training steps at the same batch on random inputs, minus its interpreter; *rest* =
the run's peak minus the other three: validation and test forward passes, the state snapshot
written after the epoch (`cpu_copy` of weights and AdamW moments, about 3x the trainable
weights), the safetensors save, allocator slack. The extrapolation to the study's batch adds
the per-sample growth of the model part measured between batch b/2 and b (activations grow
linearly with the batch); it is a CPU figure, not measured. *Host peak with `device: cuda`*:
an estimate from these parts, not a measurement: the interpreter plus the largest of (one
split on the host before its move, measured with `meta` below; what the splits leave on the
host plus the state snapshot, weights + 2 AdamW moments; the model built on the host before
its move), without the host memory of the CUDA context and libraries (unmeasured here; on a
GPU this benchmark measures the whole host peak, that included).

Decoded data (tensor bytes; "RSS growth" measured in the loading process):

{data_head}
|---|---|---|---|---|---|---|---|---|
{chr(10).join(data_rows)}

Model part (GiB): parameters; parameters + gradients + 2 AdamW moments (analytic);
RSS after building; RSS peak over {args.fdr} steps (no data):

| model | batch | parameters | + grads + AdamW | RSS after build | RSS peak, steps | GPU peak GiB |
|---|---|---|---|---|---|---|
{chr(10).join(model_rows)}

On a CPU the model, its activations, AdamW and the data caches all live in host memory: the
figures above are an upper bound of a GPU run's host peak. With `device: cuda`,
`load_triplets(device=...)` moves each split to the GPU and keeps no host copy (the `meta`
columns: what a split leaves on the host after `Triplets.to(device)`, and the transient while
one split is on the host before the move; only the test split's 512 px masks stay there, for
the scores); the model is built on the host and moved; what stays on the host per epoch is
the state snapshot (`cpu_copy`, about 3x the trainable weights) while it is written.

{gpu}
"""


def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _child_main(argv) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(CHILDREN))
    ap.add_argument("--out", required=True)
    for name in ("model", "strategy", "real", "synthetic", "cache", "device", "encoders",
                 "runs", "data-device"):
        ap.add_argument(f"--{name}")
    for name in ("batch", "fdr", "steps"):
        ap.add_argument(f"--{name}", type=int, default=2)
    args = ap.parse_args(argv)
    answer = CHILDREN[args.kind](args)
    Path(args.out).write_text(json.dumps(answer, default=str))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return _child_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the stand-in (once; resumes)")
    b.add_argument("--root", default="data/bench-paper-scale")
    b.add_argument("--workers", type=int, default=2)
    m = sub.add_parser("measure", help="the measured runs; writes RESULTS.md")
    m.add_argument("--root", default="data/bench-paper-scale")
    m.add_argument("--device", default="auto",
                   help="auto (default: CUDA when there is one, at the study's batch sizes), "
                        "cpu or cuda")
    m.add_argument("--encoders", default="trained", help="trained (the most memory) or frozen")
    m.add_argument("--fdr", type=int, default=2, help="fast_dev_run batches")
    m.add_argument("--batch", action="append", default=[], metavar="MODEL=N",
                   help="batch per model (default: the study's on a GPU, "
                        f"{CPU_BATCH} on a CPU)")
    m.add_argument("--only", action="append", metavar="MODEL[:STRATEGY]")
    m.add_argument("--work", help="keep logs, runs and results.json here (default: a temp "
                   "dir); a rerun with the same folder reuses the runs measured there")
    m.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args(argv)
    root = ROOT / args.root if not Path(args.root).is_absolute() else Path(args.root)
    if args.cmd == "build":
        paths = build(root, args.workers)
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
        return 0
    if not all(_done(root, s, {"n_patients": N_PATIENTS, "n_per_map": N_PER_MAP, "seed": 0,
                               "size": 512}) for s in ("phantom", "real", "released",
                                                       "synthetic")):
        build(root, 2)
    results = measure(args)
    md = report(results, args)
    print(md)
    if not args.no_write:
        from benchmarks._results import update_section
        update_section("paper_memory", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
