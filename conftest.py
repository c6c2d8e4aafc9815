"""Test-wide settings: the notebooks (nbval, ``pytest --nbval-lax book``) are ``slow`` tests.

``pytest -m "not slow" tests`` runs the unit tests alone in a few minutes; CI runs everything.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
