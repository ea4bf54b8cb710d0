"""Data: the CAMUS reader, the built-in echo phantom, the export to PNG datasets, and figures.

- ``camus``: read a CAMUS tree (2019 ``.mhd`` or 2023 ``.nii.gz`` release) into records.
- ``headers``: one image file's header (shape, spacing) and pixels, both formats.
- ``phantom``: simulated CAMUS-like trees (``write_phantom``, ``simulate_patient``).
- ``export``: records -> square PNGs, label maps, masks and ``records.csv``.
- ``viz``: label overlays, example grids and count tables (notebook 01).
"""
