"""The ``echo-vlsm`` command. Subcommands are added by the steps that own them."""

from __future__ import annotations

import argparse
import sys

from echo_vlsm import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echo-vlsm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"echo-vlsm {__version__}")
    parser.add_subparsers(dest="command")
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
