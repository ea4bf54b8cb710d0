"""What a notebook ran on: package versions, the git commit and the device, in one call (floor 1).

Each notebook's first code cell after its parameters calls :func:`print_environment`, so an
executed notebook records where its numbers came from (as MONAI's tutorials do). Nothing
heavy is imported here: versions come from the installed packages' metadata, and torch is
asked for the device only when it is importable.

Examples::

    >>> env = environment(packages=("numpy",))
    >>> sorted(env) == ["commit", "device", "packages", "platform", "python"]
    True
    >>> env["packages"]["numpy"] != "not installed"
    True
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import subprocess
import sys

from echo_vlsm.paths import project_root

#: The distributions whose versions a notebook records (their PyPI names).
PACKAGES = ("echo-vlsm", "torch", "transformers", "open_clip_torch", "diffusers", "monai",
            "numpy", "pandas", "scipy", "SimpleITK", "opencv-python-headless", "papermill")


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit(root=None) -> str:
    """The project's git commit (short hash, ``+dirty`` with uncommitted changes), or
    ``"unknown"`` outside a git checkout (e.g. an installed wheel)."""
    try:
        where = str(root or project_root())
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=where,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    return f"{sha}+dirty" if dirty.strip() else sha


def device_description() -> str:
    """The accelerator torch would use (``cuda: <name> x N``, ``mps``) or ``cpu``; torch is
    imported only if it is installed (``"cpu (torch not installed)"`` otherwise)."""
    if importlib.util.find_spec("torch") is None:
        return "cpu (torch not installed)"
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"cuda: {torch.cuda.get_device_name(0)} x {n}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return f"cpu ({torch.get_num_threads()} threads)"


def environment(packages=PACKAGES) -> dict:
    """Python, platform, package versions, git commit and device as one dict."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in packages},
        "commit": git_commit(),
        "device": device_description(),
    }


def format_environment(env: dict) -> str:
    """``environment()`` as a few aligned lines."""
    rows = [("python", f"{env['python']} on {env['platform']}"), ("commit", env["commit"]),
            ("device", env["device"]), *env["packages"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def print_environment(packages=PACKAGES) -> dict:
    """Print the environment (the record an executed notebook keeps) and return it."""
    env = environment(packages)
    print(format_environment(env))
    return env
