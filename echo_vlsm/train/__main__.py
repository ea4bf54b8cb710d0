"""Train one run from the command line, also under torchrun::

    python -m echo_vlsm.train model=clipseg size=tiny prompt=p2 epochs=5
    torchrun --nproc_per_node 2 -m echo_vlsm.train config.json device=cpu

Arguments are ``key=value`` pairs of :class:`TrainConfig` (values read as YAML: ``5``,
``null``, ``true``) and/or a JSON file with such a mapping (``config.json`` of a run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from echo_vlsm.train import TrainConfig, fit


def parse_args(argv: list[str]) -> dict:
    import yaml

    values: dict = {}
    for arg in argv:
        if "=" in arg:
            key, raw = arg.split("=", 1)
            values[key] = yaml.safe_load(raw) if raw != "" else ""
        elif Path(arg).is_file():
            values.update(json.loads(Path(arg).read_text()))
        else:
            raise SystemExit(f"{arg}: neither key=value nor an existing JSON config file")
    return values


def main(argv: list[str] | None = None) -> int:
    config = TrainConfig.from_dict(parse_args(sys.argv[1:] if argv is None else argv))
    result = fit(config)
    if result is not None and result.summary:
        s = result.summary
        print(f"{config.run_id}: best val dice {s['best_val_dice']:.2f} at epoch "
              f"{s['best_epoch']}, test dice {s.get('test_dice', float('nan')):.2f} "
              f"-> {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
