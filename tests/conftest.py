"""Shared fixtures. Data fixtures build tiny trees in temporary folders; nothing is downloaded."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # makes `tools` importable for the notebook tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


def _encrypted_kernel() -> dict:
    """papermill keyword arguments that encrypt the kernel's connection with CurveZMQ keys
    provisioned by jupyter_client (>= 8.10, pyzmq with curve): the kernel then no longer logs
    "Kernel is running over TCP without encryption" for every notebook. Nothing otherwise."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_traits() or not zmq.has("curve"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


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
            **_encrypted_kernel(),
        )
        return nbformat.read(out, as_version=4)

    return _run


# --------------------------------------------------------------------------- data fixtures


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A 2023-layout phantom tree (``write_phantom``): 6 patients, seed 0, every split
    non-empty (4 train, 1 val, 1 test). Shared by the session: treat it as read-only."""
    from echo_vlsm.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom") / "camus"
    return write_phantom(root, n_patients=6, seed=0, workers=0)


@pytest.fixture(scope="session")
def exported_dataset(phantom_root, tmp_path_factory):
    """``phantom_root`` read with ``read_camus`` and exported at 128 x 128
    (``export_dataset``): images/, labels/, masks/, records.csv. Read-only."""
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset

    out = tmp_path_factory.mktemp("exported") / "phantom"
    return export_dataset(read_camus(phantom_root), out, size=128, workers=0)


@pytest.fixture(scope="module")
def task_dataset(exported_dataset, tmp_path_factory):
    """``exported_dataset`` with its task files (``write_tasks``), copied once per test module
    so the module's caches and task files stay private to it (4 train, 1 val, 1 test
    patients; 128 px)."""
    import shutil

    from echo_vlsm.prompts import write_tasks

    root = tmp_path_factory.mktemp("tasks") / "phantom"
    shutil.copytree(exported_dataset, root)
    write_tasks(root)
    return root


@pytest.fixture
def one_thread():
    """One torch thread for the test: the same float results whatever the machine's core
    count (and no oversubscription beside the other test worker)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` first, in their order (the notebooks' nbval group keeps its
    own): longest first, so that under xdist the workers end together instead of one running
    a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
