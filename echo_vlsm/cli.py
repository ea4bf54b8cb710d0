"""The ``echo-vlsm`` command: ``reproduce`` runs a profile's notebooks, ``status`` shows them.

    echo-vlsm reproduce --profile demo            # the whole chain, resumable
    echo-vlsm reproduce --profile paper --shard 2/4 --keep-going
    echo-vlsm reproduce --profile demo --only 'cris_*_p1' --dry-run
    echo-vlsm status --profile demo
"""

from __future__ import annotations

import argparse
import sys

from echo_vlsm import __version__, pipeline


def _reproduce(args: argparse.Namespace) -> int:
    shard = pipeline.parse_shard(args.shard) if args.shard else None
    stages = args.stage or pipeline.STAGES
    try:
        out = pipeline.reproduce(
            args.profile, notebooks_dir=args.notebooks, shard=shard, only=args.only,
            keep_going=args.keep_going, stages=stages, dry_run=args.dry_run,
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
        full = pipeline.status(args.profile)
    except pipeline.ProfileError as exc:
        print(f"echo-vlsm status: {exc}", file=sys.stderr)
        return 2
    table = full[full["state"].isin(args.state)] if args.state else full
    table = table.astype(object).where(table.notna(), "")
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 90,
                           "display.width", 200):
        print(table.to_string(index=False) if len(table) else "(nothing)")
    counts = full["state"].value_counts()
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "started", "pending", "failed")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echo-vlsm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"echo-vlsm {__version__}")
    sub = parser.add_subparsers(dest="command")

    rep = sub.add_parser("reproduce", help="run the notebooks 01-06 of a profile with papermill")
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
    rep.add_argument("--notebooks", default=None, help="folder of the notebooks (default notebooks/)")
    rep.add_argument("--dry-run", action="store_true", help="list what would run")
    rep.set_defaults(func=_reproduce)

    st = sub.add_parser("status", help="table of a profile's steps and runs: done, pending, failed")
    st.add_argument("--profile", default="demo")
    st.add_argument("--state", action="append",
                    choices=("done", "started", "pending", "failed"), help="only these states")
    st.set_defaults(func=_status)
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
