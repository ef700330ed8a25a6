"""A normal (non-editable) install carries every package: pyproject's explicit list must name each folder that
holds Python code. `pip install .` once left out dlc.backends.triton, so `dlc compile` failed after installing."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
PREFIX = {"dlc": "dlc", "grammar": "dlc.grammar", "compiler": "dlc.compiler", "backends": "dlc.backends"}


def test_every_code_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, package in PREFIX.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; extra: {sorted(listed - found)}"
