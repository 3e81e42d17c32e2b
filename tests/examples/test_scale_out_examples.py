"""The scale-out examples run to completion: data-parallel training under ``torchrun`` (no Ray), and
the guide's Ray Train example on a local Ray runtime (skipped without the ``ray`` extra)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import torchray_loader

REPO_ROOT = Path(torchray_loader.__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as exc:  # the child is killed by subprocess.run
        pytest.fail(f"{cmd} did not finish in {timeout}s; output tail:\n{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}")


@pytest.mark.slow
def test_torchrun_data_parallel_example() -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(EXAMPLES / "torchrun_train.py")]
    result = _run(cmd, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "rank 0/2: 568 rows" in out and "rank 1/2: 568 rows" in out, out[-4000:]
    assert "torchrun example: done (1136 rows across 2 ranks)" in out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")
def test_ray_train_example() -> None:
    result = _run([sys.executable, str(EXAMPLES / "ray_train.py")], timeout=540)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "ray_train example: done" in out, out[-6000:]
