"""Exactness of the method of discs (echo_vlsm.clinical) on half-ellipsoids of known volume.

Each case is an LV at ED and ES drawn as half-ellipsoids (semi-axes L, A, B in mm; apical
2-chamber section L x A, 4-chamber L x B), each view tilted and on its own anisotropic
pixel grid. For each disc-height rule it prints, per quantity:

* ``exact``:    what the rule should give on the continuous shape: the half-ellipsoid's
                volume (2/3 pi A B L); under the CAMUS rule the ES volume times L_ED / L_ES
                (its disc height is L_ED / 20); EF from those two;
* ``20 discs``: what 20 discs at fractions i/20 of L give on the continuous shape
                (``exact`` x 1.0369, a left Riemann sum);
* ``measured``: ``biplane_volumes`` on the pixel masks;
* errors of ``measured`` against both (%, or EF points).

    python benchmarks/clinical_exactness.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from echo_vlsm.clinical import biplane_volumes  # noqa: E402
from echo_vlsm.clinical.shapes import discs_ml, half_ellipse_mask, half_ellipsoid_ml  # noqa: E402

# name, ED (L, A, B), ES (L, A, B), 2CH (shape, spacing, tilt), 4CH (shape, spacing, tilt)
CASES = [
    ("normal, 0.31x0.22 / 0.25x0.35 mm, tilt 17/-15", (85, 24, 26), (70, 17, 19),
     ((340, 420), (0.31, 0.22), 17.0), ((420, 300), (0.25, 0.35), -15.0)),
    ("small, 0.30x0.30 / 0.40x0.25 mm, tilt 20/-20", (65, 18, 19), (55, 12, 13),
     ((260, 260), (0.30, 0.30), 20.0), ((200, 320), (0.40, 0.25), -20.0)),
    ("dilated low EF, CAMUS-like 0.154x0.308 mm, tilt 10/-18", (100, 32, 34), (95, 29, 31),
     ((800, 330), (0.154, 0.308), 10.0), ((800, 330), (0.154, 0.308), -18.0)),
    ("same ES and ED axis, 512-like 0.27x0.21 mm, tilt 15/15", (80, 25, 25), (80, 18, 18),
     ((380, 420), (0.27, 0.21), 15.0), ((380, 420), (0.27, 0.21), 15.0)),
]


def expected(ed: tuple, es: tuple, rule: str) -> dict[str, tuple[float, float]]:
    """``{quantity: (exact, 20 discs)}`` for one rule."""
    h = max(ed[0], es[0]) / 20 if rule == "camus" else None
    es_scale = (max(ed[0], es[0]) / es[0]) if rule == "camus" else 1.0
    ed_scale = (max(ed[0], es[0]) / ed[0]) if rule == "camus" else 1.0
    edv = (half_ellipsoid_ml(*ed) * ed_scale, discs_ml(*ed, height_mm=h))
    esv = (half_ellipsoid_ml(*es) * es_scale, discs_ml(*es, height_mm=h))
    ef = tuple(100 * (d - s) / d for d, s in zip(edv, esv, strict=True))
    return {"EDV mL": edv, "ESV mL": esv, "EF %": ef}


def main() -> int:
    print("| case | rule | quantity | exact | 20 discs | measured | error vs exact "
          "| error vs 20 discs |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    worst = {"volume": 0.0, "volume_discs": 0.0, "ef": 0.0}
    seconds = []
    for name, ed, es, view2, view4 in CASES:
        masks = [half_ellipse_mask(view[0], view[1], shape[0], shape[half], tilt_deg=view[2])
                 for view, half in ((view2, 1), (view4, 2)) for shape in (ed, es)]
        for rule in ("camus", "textbook"):
            t0 = time.perf_counter()
            v = biplane_volumes(*masks, view2[1], view4[1], disc_height=rule)
            seconds.append((time.perf_counter() - t0) / 4)
            measured = {"EDV mL": v.edv_ml, "ESV mL": v.esv_ml, "EF %": v.ef_percent}
            for quantity, (exact, discs) in expected(ed, es, rule).items():
                got = measured[quantity]
                if quantity == "EF %":
                    err, err_d = f"{got - exact:+.2f} pt", f"{got - discs:+.2f} pt"
                    worst["ef"] = max(worst["ef"], abs(got - exact))
                else:
                    rel, rel_d = 100 * (got / exact - 1), 100 * (got / discs - 1)
                    err, err_d = f"{rel:+.2f} %", f"{rel_d:+.2f} %"
                    worst["volume"] = max(worst["volume"], abs(rel))
                    worst["volume_discs"] = max(worst["volume_discs"], abs(rel_d))
                print(f"| {name} | {rule} | {quantity} | {exact:.2f} | {discs:.2f} | "
                      f"{got:.2f} | {err} | {err_d} |")
    print(f"\nlargest volume error: {worst['volume']:.2f} % against the exact volume, "
          f"{worst['volume_discs']:.2f} % against 20 discs; largest EF error "
          f"{worst['ef']:.2f} points")
    print(f"time per mask: median {sorted(seconds)[len(seconds) // 2] * 1000:.0f} ms, "
          f"max {max(seconds) * 1000:.0f} ms (masks of 200 to 800 rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
