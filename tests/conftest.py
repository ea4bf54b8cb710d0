"""Shared fixtures. Data fixtures build tiny trees in temporary folders; nothing is downloaded."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # makes `tools` importable for the notebook tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture
def run_notebook(tmp_path):
    """Execute ``notebooks/<name>`` with papermill and the given parameters; return the
    executed notebook (nbformat) after asserting it ran without error. Runs from the
    project root so relative parameters resolve there; pass absolute tmp paths for outputs."""
    import nbformat
    import papermill as pm

    def _run(name: str, parameters: dict, timeout: int = 300):
        out = tmp_path / f"executed_{name}"
        pm.execute_notebook(
            str(ROOT / "notebooks" / name),
            str(out),
            parameters=parameters,
            cwd=str(ROOT),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
        )
        return nbformat.read(out, as_version=4)

    return _run
