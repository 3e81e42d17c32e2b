"""Ray is optional: ``import ray`` lives only in ``torchray_loader/integrations/`` and happens lazily;
without Ray the bridge raises an ImportError naming the ``ray`` extra. Runs without Ray installed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torchray_loader

PACKAGE_DIR = Path(torchray_loader.__file__).resolve().parent


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )


def test_without_ray_the_bridge_names_the_extra() -> None:
    result = _run(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import torchray_loader as rd
        from torchray_loader.integrations.ray import is_ray_dataset, ray_iterable_to_batches

        calls = {
            "to_ray": lambda: rd.range(3).to_ray(),
            "from_ray": lambda: rd.from_ray(object()),
            "ray_iterable_to_batches": lambda: ray_iterable_to_batches(object(), batch_size=2),
        }
        for name, call in calls.items():
            try:
                call()
            except ImportError as exc:
                assert "torchray_loader[ray]" in str(exc) and "'ray' extra" in str(exc), (name, str(exc))
            else:
                raise AssertionError(f"{name} did not raise ImportError")
        # Detection needs no Ray at all.
        assert is_ray_dataset(rd.range(2)) is False
        # The local package keeps working.
        assert rd.range(3).map(lambda r: {"x": r["id"] + 1}).take_all() == [{"x": 1}, {"x": 2}, {"x": 3}]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_importing_the_package_and_the_bridge_does_not_import_ray() -> None:
    result = _run(
        """
        import sys
        import torchray_loader as rd
        import torchray_loader.integrations.ray as bridge
        from torchray_loader.integrations.ray import is_ray_dataset
        rd.range(4).take_all()
        is_ray_dataset(rd.range(1))
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _imports_ray(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(alias.name == "ray" or alias.name.startswith("ray.") for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ray" or node.module.startswith("ray."):
                lines.append(node.lineno)
    return lines


def test_ray_is_imported_only_in_integrations_and_only_inside_functions() -> None:
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        tree = ast.parse(path.read_text(), filename=str(path))
        lines = _imports_ray(tree)
        if not lines:
            continue
        if rel.parts[0] != "integrations":
            offenders.append(f"{rel}:{lines}")
            continue
        top_level = [n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and _imports_ray(n)]
        if top_level:
            offenders.append(f"{rel}: module-level import ray at lines {top_level}")
    assert not offenders, offenders
