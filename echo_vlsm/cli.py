"""The ``echo-vlsm`` command: ``reproduce`` runs a profile's notebooks, ``status`` shows them.

    echo-vlsm reproduce --profile demo --jobs 2   # the whole chain, two jobs at once
    echo-vlsm reproduce --profile paper --jobs auto --keep-going   # one job per GPU
    echo-vlsm reproduce --profile paper --launcher slurm --partition gpu --gpus-per-job 1
    echo-vlsm reproduce --profile demo --only 'cris_*_p1' --dry-run   # the graph
    echo-vlsm status --profile demo
"""

from __future__ import annotations

import argparse
import sys

from echo_vlsm import __version__, pipeline
from echo_vlsm.pipeline.inputs import check_profile_inputs


def _slurm_options(args: argparse.Namespace) -> dict:
    extra = {}
    for item in args.slurm_extra or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-extra {item!r}: expected KEY=VALUE")
        extra[key] = value
    options = {"partition": args.partition, "gpus_per_job": args.gpus_per_job,
               "cpus_per_job": args.cpus_per_job, "mem": args.mem, "time": args.time,
               "account": args.account, "extra": extra or None}
    return {k: v for k, v in options.items() if v is not None}


def _reproduce(args: argparse.Namespace) -> int:
    try:
        shard = pipeline.parse_shard(args.shard) if args.shard else None
        stages = args.stage or pipeline.STAGES
        jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
        gpus = args.gpus.split(",") if args.gpus else None
        if not args.dry_run:  # every missing input in one message, before any job starts
            check_profile_inputs(args.profile, notebooks_dir=args.notebooks, shard=shard,
                                 only=args.only, stages=stages, fast_dev_run=args.fast_dev_run,
                                 keep_stale=args.keep_stale, launcher=args.launcher,
                                 slurm=_slurm_options(args))
        out = pipeline.reproduce(
            args.profile, notebooks_dir=args.notebooks, shard=shard, only=args.only,
            keep_going=args.keep_going, stages=stages, dry_run=args.dry_run, jobs=jobs,
            gpus=gpus, keep_stale=args.keep_stale, launcher=args.launcher,
            slurm=_slurm_options(args), wait=args.wait, fast_dev_run=args.fast_dev_run,
        )
    except pipeline.PipelineError as exc:
        print(f"echo-vlsm reproduce: {exc}", file=sys.stderr)
        print(f"  see `echo-vlsm status --profile {args.profile}`; rerun to resume",
              file=sys.stderr)
        return 1
    except (pipeline.ProfileError, FileNotFoundError, ValueError) as exc:
        print(f"echo-vlsm reproduce: {exc}", file=sys.stderr)
        return 2
    if out.report is not None:
        print(f"Report: {out.report}")
    return 0 if out.ok else 1


def _status(args: argparse.Namespace) -> int:
    import pandas as pd

    try:
        full = pipeline.status(args.profile, fast_dev_run=args.fast_dev_run)
    except pipeline.ProfileError as exc:
        print(f"echo-vlsm status: {exc}", file=sys.stderr)
        return 2
    table = full[full["state"].isin(args.state)] if args.state else full
    table = table.astype(object).where(table.notna(), "")
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 90,
                           "display.width", 200):
        print(table.to_string(index=False) if len(table) else "(nothing)")
    counts = full["state"].value_counts()
    shown = [f"{counts.get(s, 0)} {s}" for s in ("done", "started", "pending", "failed")]
    shown += [f"{counts[s]} {s}" for s in counts.index
              if s not in ("done", "started", "pending", "failed")]
    print(", ".join(shown))
    return 0


def _parse_attributes(items: list[str] | None) -> dict | None:
    """``["view=2CH", "age=61"]`` -> ``{"view": "2CH", "age": 61}`` (``None`` without any)."""
    if not items:
        return None
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--attr {item!r}: expected KEY=VALUE, e.g. view=2CH")
        value = value.strip()
        out[key.strip()] = int(value) if key.strip() == "age" and value.isdigit() else value
    return out


def _segment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from echo_vlsm import inference

    out_dir = Path(args.out) if args.out else None
    try:
        attributes = _parse_attributes(args.attr)
        model = inference.load_model(args.model, device=args.device,
                                     trust_weights=args.trust_weights)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"echo-vlsm segment: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for image in args.images:
        try:
            result = inference.segment(model, image, args.prompt, attributes=attributes,
                                       phrasing=args.phrasing)
            folder = out_dir if out_dir is not None else Path(image).parent
            written = inference.write_result(result, folder, inference.stem_of(image),
                                             with_overlay=args.overlay)
        except (ValueError, FileNotFoundError, TypeError, OSError) as exc:
            print(f"echo-vlsm segment: {exc}", file=sys.stderr)
            failed += 1
            continue
        h, w = result.mask.shape
        print(f"{image}: {w}x{h}, prompt {result.prompt!r}, mask {100 * result.area:.1f}% "
              f"-> {', '.join(str(p) for p in written)}")
    return 1 if failed else 0


def _spacing_arg(text: str | None) -> tuple[float, float] | None:
    """``"0.3,0.3"`` -> ``(0.3, 0.3)`` (row mm, column mm); one number: square pixels."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p > 0 and p < float("inf") for p in parts):
        raise ValueError(f"--spacing {text!r}: expected ROW_MM,COL_MM, e.g. 0.3,0.3")
    return parts[0], parts[1]


def _measure(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from echo_vlsm.inference import load_model
    from echo_vlsm.inference.measure import measure
    from echo_vlsm.io import write_text_atomic

    try:
        model = load_model(args.model, device=args.device, trust_weights=True) \
            if args.trust_weights else args.model
        m = measure(model, args.patient, prompt=args.prompt,
                    attributes=_parse_attributes(args.attr), spacing=_spacing_arg(args.spacing),
                    phrasing=args.phrasing, device=args.device)
    except (ValueError, FileNotFoundError, TypeError, OSError) as exc:
        print(f"echo-vlsm measure: {exc}", file=sys.stderr)
        return 2
    record = m.as_dict()
    out = Path(args.out) if args.out else Path(f"{m.images.patient}_measure.json")
    write_text_atomic(out, json.dumps(record, indent=2) + "\n")

    def show(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:.1f} {unit}"

    print(f"{m.images.patient} (prompt {m.prompt}): EDV {show(record['edv_ml'], 'mL')}, "
          f"ESV {show(record['esv_ml'], 'mL')}, EF {show(record['ef_percent'], '%')}"
          + (f"; {m.reason}" if m.reason else "") + f" -> {out}")
    return 0 if m.reason is None else 1


def _export_model(args: argparse.Namespace) -> int:
    from echo_vlsm import inference

    try:
        out = inference.export_model(args.run_dir, args.out_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"echo-vlsm export-model: {exc}", file=sys.stderr)
        return 2
    print(f"Exported {args.run_dir} -> {out} "
          f"({', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))})")
    if args.push:
        url = inference.push_model(out, args.push, private=args.private)
        print(f"Pushed to https://huggingface.co/{args.push} ({url})")
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    """Build the stand-ins once, then run the rehearsal profile with --fast-dev-run."""
    import resource
    import time

    from echo_vlsm.pipeline.profiles import REHEARSAL_RUNS, REHEARSAL_RUNS_QUICK
    from echo_vlsm.rehearsal import build_standins

    t0 = time.perf_counter()
    paths = build_standins(pipeline.project_root() / "data" / "rehearsal")
    print(f"echo-vlsm rehearse: stand-ins ready in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in paths.items()))
    only = args.only or list(REHEARSAL_RUNS_QUICK if args.quick else REHEARSAL_RUNS)
    try:  # the stand-ins exist now: the check finds every input of the rehearsal
        check_profile_inputs(args.profile, only=only, fast_dev_run=args.fast_dev_run)
        out = pipeline.reproduce(args.profile, only=only, fast_dev_run=args.fast_dev_run,
                                 jobs=args.jobs, keep_going=args.keep_going)
    except (pipeline.PipelineError, pipeline.ProfileError) as exc:
        print(f"echo-vlsm rehearse: {exc}", file=sys.stderr)
        return 1
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    print(f"echo-vlsm rehearse: {time.perf_counter() - t0:.0f} s in all; peak memory of one "
          f"process {peak:.1f} GiB; report: {out.report}")
    return 0 if out.ok else 1


def _plan(args: argparse.Namespace) -> int:
    from echo_vlsm.pipeline.cost import Assumptions, format_plan, plan_cost

    try:
        prof = pipeline.load_profile(args.profile)
    except pipeline.ProfileError as exc:
        print(f"echo-vlsm plan: {exc}", file=sys.stderr)
        return 2
    assume = Assumptions(args.tflops, args.utilization, args.epochs_per_run)
    print(format_plan(plan_cost(prof, pipeline.project_root(), assume), prof, assume))
    return 0


def _add_reproduce(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser("reproduce", help="run a profile's notebooks (01-10) with papermill")
    rep.add_argument("--profile", default="demo",
                     help="name in notebooks/params/ (demo, paper) or a YAML file")
    rep.add_argument("--shard", metavar="I/N",
                     help="run the I-th of N disjoint shares of the runs (1-based)")
    rep.add_argument("--only", action="append", metavar="GLOB",
                     help="only runs whose id matches (repeatable), e.g. 'cris_real_*'")
    rep.add_argument("--keep-going", action="store_true",
                     help="after a failed run, go on with the runs that do not need it")
    rep.add_argument("--stage", action="append", choices=("prepare", "runs", "analysis"),
                     help="only these stages (repeatable; default all)")
    rep.add_argument("--notebooks", default=None,
                     help="folder of the notebooks (default notebooks/)")
    rep.add_argument("--dry-run", action="store_true",
                     help="print the graph: each job that would run and what it waits for")
    rep.add_argument("--jobs", "-j", default="1", metavar="N",
                     help="jobs at once (default 1; 'auto': one per visible GPU)")
    rep.add_argument("--gpus", metavar="0,1,3", help="the GPUs to pin jobs to (default: all)")
    rep.add_argument("--keep-stale", action="store_true",
                     help="keep finished runs whose inputs changed (flagged in the report)")
    rep.add_argument("--fast-dev-run", type=int, nargs="?", const=2, default=None, metavar="N",
                     help="rehearse the profile: every job capped to N batches, steps or "
                          "images (default 2), into '-fdr' folders")
    rep.add_argument("--launcher", choices=("local", "slurm"), default="local",
                     help="run here (default) or submit each job to Slurm")
    slurm = rep.add_argument_group("Slurm (with --launcher slurm; or a 'slurm:' key in the "
                                   "profile)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-job", type=int)
    slurm.add_argument("--cpus-per-job", type=int)
    slurm.add_argument("--mem", help="e.g. 32G")
    slurm.add_argument("--time", type=int, help="minutes per job")
    slurm.add_argument("--account")
    slurm.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                       help="any other sbatch option (repeatable)")
    slurm.add_argument("--wait", action="store_true",
                       help="stay until the submitted jobs have finished")
    rep.set_defaults(func=_reproduce)


def _add_status_rehearse_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="table of a profile's steps and runs: done, pending, failed")
    st.add_argument("--profile", default="demo")
    st.add_argument("--fast-dev-run", type=int, nargs="?", const=2, default=None, metavar="N",
                    help="the rehearsal's jobs (reproduce --fast-dev-run N)")
    st.add_argument("--state", action="append",
                    choices=("done", "started", "pending", "failed", "stale", "damaged",
                             "running", "queued"), help="only these states")
    st.set_defaults(func=_status)

    rh = sub.add_parser("rehearse", help="the paper profile on stand-ins in the real formats, "
                        "--fast-dev-run, on this machine (make rehearsal)")
    rh.add_argument("--profile", default="rehearsal")
    rh.add_argument("--fast-dev-run", type=int, default=2, metavar="N")
    rh.add_argument("--only", action="append", metavar="GLOB",
                    help="runs to rehearse (default: every strategy of each model, both "
                         "encoder settings)")
    rh.add_argument("--quick", action="store_true",
                    help="two runs only (one that trains, one that scores), as make test does")
    rh.add_argument("--jobs", "-j", type=int, default=1)
    rh.add_argument("--keep-going", action="store_true")
    rh.set_defaults(func=_rehearse)

    pl = sub.add_parser("plan", help="the GPU hours a profile's grid would take, before it runs")
    pl.add_argument("--profile", default="paper")
    pl.add_argument("--tflops", type=float, default=989.0,
                    help="the GPU's peak TFLOP/s at the training precision (H100 bf16: 989)")
    pl.add_argument("--utilization", type=float, default=None,
                    help="fraction of the peak (default: what each model reaches in the "
                         "measured H200 rates)")
    pl.add_argument("--epochs-per-run", type=int, default=60,
                    help="epochs a run takes until early stopping, on average")
    pl.set_defaults(func=_plan)


def _add_segment_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    seg = sub.add_parser("segment", help="segment images with a trained model and a prompt")
    seg.add_argument("model", metavar="RUN_OR_MODEL",
                     help="a run folder (runs/<profile>/<run_id>) or an exported model folder")
    seg.add_argument("images", metavar="IMAGE", nargs="+",
                     help="PNG/JPEG, CAMUS .mhd/.nii.gz, or 2-D DICOM (with pydicom)")
    seg.add_argument("--prompt", required=True,
                     help="a free text, or a key p0..p7 together with --attr")
    seg.add_argument("--attr", action="append", metavar="KEY=VALUE",
                     help="an attribute for a prompt key (structure, view, phase, sex, age, "
                          "quality, shape; repeatable)")
    seg.add_argument("--phrasing", type=int, default=0, choices=(0, 1),
                     help="which of a key's two phrasings (default 0: '... of the heart.')")
    seg.add_argument("--out", metavar="DIR",
                     help="where <stem>_mask.png goes (default: next to each image)")
    seg.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    seg.add_argument("--trust-weights", action="store_true",
                     help="let a zero-shot CRIS run read its pretrained TorchScript/pickle "
                          "weights (runs code stored in them; only for files you trust)")
    seg.set_defaults(func=_segment)

    mea = sub.add_parser("measure", help="EDV, ESV and EF of one patient, from the LV "
                                         "masks a trained model draws")
    mea.add_argument("model", metavar="RUN_OR_MODEL",
                     help="a run folder (runs/<profile>/<run_id>) or an exported model folder")
    mea.add_argument("patient", metavar="PATIENT", nargs="+",
                     help="a CAMUS patient folder, or four images named by view and phase "
                          "(..._2CH_ED.png, ..._2CH_ES, ..._4CH_ED, ..._4CH_ES)")
    mea.add_argument("--prompt", help="a key p0..p7 or a text (default: the model's key)")
    mea.add_argument("--attr", action="append", metavar="KEY=VALUE",
                     help="a prompt attribute the images do not give (sex, age, quality, "
                          "shape; repeatable); overrides the Info cfg's")
    mea.add_argument("--spacing", metavar="ROW_MM,COL_MM",
                     help="pixel size of images that carry none (PNG, JPEG, DICOM)")
    mea.add_argument("--phrasing", type=int, default=0, choices=(0, 1),
                     help="which of a key's two phrasings (default 0)")
    mea.add_argument("--out", metavar="FILE.json",
                     help="where the JSON goes (default: <patient>_measure.json here)")
    mea.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    mea.add_argument("--trust-weights", action="store_true",
                     help="let a zero-shot CRIS run read its pretrained TorchScript/pickle "
                          "weights (runs code stored in them; only for files you trust)")
    mea.set_defaults(func=_measure)

    exp = sub.add_parser("export-model",
                         help="write a run as a shareable model folder (Hugging Face layout)")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a complete run folder")
    exp.add_argument("out_dir", metavar="OUT_DIR", help="a new or empty folder")
    exp.add_argument("--push", metavar="REPO",
                     help="then upload it to this Hugging Face hub repository (needs a token)")
    exp.add_argument("--private", action="store_true", help="create the hub repository private")
    exp.set_defaults(func=_export_model)


def build_parser() -> argparse.ArgumentParser:
    """The ``echo-vlsm`` parser: one sub-command per ``_add_*`` function below."""
    parser = argparse.ArgumentParser(prog="echo-vlsm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"echo-vlsm {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_reproduce(sub)
    _add_status_rehearse_plan(sub)
    _add_segment_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
