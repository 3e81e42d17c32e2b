"""The examples run as users run them (subprocesses) and reach their stated accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.timeout(300)
def test_train_digits_reaches_target():
    out = _run("train_digits.py").stdout
    assert re.search(r"epoch 1/8: loss [\d.]+\s+[\d,]+ samples/s", out), out
    accuracy = float(re.search(r"final test accuracy ([\d.]+)%", out).group(1))
    assert accuracy >= 93.0


@pytest.mark.timeout(300)
def test_ddp_example_two_cpu_processes():
    out = _run("ddp_train.py").stdout
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 6
    for line in lines:
        counts = re.search(r"batches per rank \[(\d+), (\d+)\]", line)
        assert counts and counts.group(1) == counts.group(2), line
    assert "equal batches on all ranks: True" in out
