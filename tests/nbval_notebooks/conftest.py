"""nbval over the notebooks, in numbered order, in a scratch project: ``make test`` passes
``--nbval-lax`` and this folder's ``ci_parameters.yaml`` becomes one node whose children are
the notebooks (``tests/notebooks_ci.py`` says how)."""

from notebooks_ci import pytest_collect_file

__all__ = ["pytest_collect_file"]
