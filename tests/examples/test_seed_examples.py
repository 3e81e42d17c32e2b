"""Every example script runs as a user would run it (``python examples/<name>.py``) and prints what it should.

Each script generates its own data in a temporary directory and asserts its own results; here we
check the exit status and the lines the Ray Data guide's ``testoutput`` blocks show. Each script is
its own process, forked from a process that already imported torch (``tests/script_zygote.py``),
two at a time, so the file stays under a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from script_zygote import ScriptResult, ScriptRunner  # noqa: E402 - tests/ is not a package

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT_S = 240

SCHEMA_TENSOR = """\
Column  Type
------  ----
tensor  numpy.ndarray(shape=(32, 32, 3), dtype=uint8)"""


@dataclass(frozen=True)
class Example:
    name: str
    #: Lines (or blocks of lines) the script's stdout must contain.
    expect: tuple[str, ...] = ()
    #: Public names of torchray_loader the script needs; a missing one skips it (API not written yet).
    needs: tuple[str, ...] = ()
    #: Python modules the script imports beyond the test extra (a missing one skips it).
    modules: tuple[str, ...] = field(default_factory=tuple)


CASES = [
    Example("seed_iterate_torch_batches", ("{'image': tensor([[[[", "dtype=torch.uint8)}"), ("read_images",)),
    Example("seed_transform_map", (SCHEMA_TENSOR,), ("read_images",)),
    Example("seed_transform_map_batches", (SCHEMA_TENSOR,), ("read_images",)),
    Example(
        "seed_torchvision_transform",
        (
            """\
Column             Type
------             ----
image              numpy.ndarray(shape=(32, 32, 3), dtype=uint8)
transformed_image  numpy.ndarray(shape=(3, 10, 10), dtype=float)""",
        ),
        ("read_images",),
        ("torchvision",),
    ),
    Example("seed_batch_inference", ("{'output': array([",), ("ActorPoolStrategy", "from_numpy")),
    Example("seed_save_tensors", ("parquet ['part-", "numpy ['part-"), ("read_parquet", "read_numpy")),
    Example(
        "seed_from_torch",
        ("Column  Type\n------  ----\nitem    <class 'object'>",),
        ("from_torch",),
        ("torchvision",),
    ),
    Example("seed_custom_dataset_migration", ("labels match",), ("read_images",), ("torchvision",)),
    Example("parquet_pipeline", ("held-out accuracy",), ("read_parquet", "ActorPoolStrategy")),
    Example("resume_training", ("match the uninterrupted run",), ("RayStyleLoader",)),
]


def missing_api(names: tuple[str, ...]) -> list[str]:
    """The names that ``torchray_loader`` does not provide (yet). Any other import failure propagates."""
    import torchray_loader as rd

    missing = []
    for name in names:
        try:
            getattr(rd, name)
        except AttributeError:
            missing.append(name)
        except ModuleNotFoundError as exc:  # a lazily imported module that is not written yet
            if not (exc.name or "").startswith("torchray_loader"):
                raise
            missing.append(name)
    return missing


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _skip_reason(case: Example) -> str | None:
    missing = missing_api(case.needs)
    if missing:
        return f"torchray_loader.{', '.join(missing)} not implemented yet"
    for module in case.modules:
        if not _has_module(module):
            return f"{module} is not installed"
    return None


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[ScriptResult]]]:
    """Starts every selected, runnable example at once (two run at a time), so they overlap."""
    selected = {item.callspec.params["case"].name for item in request.session.items if hasattr(item, "callspec")
                and isinstance(item.callspec.params.get("case"), Example)}
    runner = ScriptRunner(parallel=2)
    base = tmp_path_factory.mktemp("examples")
    futures = {
        case.name: runner.submit(EXAMPLES / f"{case.name}.py", base / case.name, timeout=TIMEOUT_S)
        for case in CASES
        if case.name in selected and _skip_reason(case) is None
    }
    yield futures
    runner.close()


def test_every_owned_example_is_listed() -> None:
    # Keeps the list honest: each script named here exists (others' examples have their own tests).
    for case in CASES:
        assert (EXAMPLES / f"{case.name}.py").is_file(), case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_example(case: Example, results: dict[str, Future[ScriptResult]]) -> None:
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    result = results[case.name].result()
    assert result.returncode == 0, f"{case.name}.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    for text in case.expect:
        assert text in result.stdout, f"{case.name}.py did not print {text!r}; stdout:\n{result.stdout[-3000:]}"
