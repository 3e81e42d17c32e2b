"""Static gates run as tests, so the one CI command (``pytest``) enforces them: ruff and mypy.

* ``ruff check torchray_loader tests examples benchmarks`` with the ``[tool.ruff]`` config of
  pyproject.toml must report nothing.
* ``mypy torchray_loader`` with the ``[tool.mypy]`` config must report nothing, and the package
  ships ``py.typed`` so users' type checkers read its annotations.

Each is skipped (not failed) where the tool is not installed; the ``test`` extra installs both.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it is in the test extra)")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_ruff_clean() -> None:
    targets = [t for t in ("torchray_loader", "tests", "examples", "benchmarks") if (ROOT / t).exists()]
    proc = _run_tool("ruff", "check", "--no-cache", "--output-format", "concise", *targets)
    assert proc.returncode == 0, f"ruff check {' '.join(targets)}:\n{proc.stdout[-8000:]}{proc.stderr[-2000:]}"


def test_mypy_clean() -> None:
    # mypy's default cache (.mypy_cache, git-ignored) makes reruns take seconds; a cold run ~40 s.
    proc = _run_tool("mypy", "torchray_loader", "--no-error-summary", "--show-error-codes", timeout=600)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert proc.returncode == 0, f"mypy torchray_loader: {len(errors)} errors\n{proc.stdout[-8000:]}{proc.stderr[-2000:]}"


def test_package_is_typed() -> None:
    # PEP 561: the marker file is in the package and declared as package data.
    assert (ROOT / "torchray_loader" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()
