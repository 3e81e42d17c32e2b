"""The measuring pieces of ``benchmarks/harness.py``: memory sampling and warm-epoch timing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.harness import MB, MemorySampler, Result, measure  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_memory_sampler_sees_the_peak_and_leaves_no_process():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with MemorySampler(interval=0.02, pss_every=1) as mem:
        block = np.ones(300 * MB, dtype=np.uint8)  # touched: resident
        time.sleep(0.3)
        del block
    assert mem.peak_rss >= 300 * MB and mem.peak_pss >= 250 * MB
    time.sleep(0.1)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_short_warm_epochs_are_repeated_and_pooled():
    def setup():
        def epoch():
            for _ in range(10):
                time.sleep(0.005)
                yield np.zeros((4, 2))
        return epoch

    res = measure(Result("T", "default", "x", 0), setup, warm_epochs=1, min_warm_s=0.3)
    assert res.extra["warm_epochs"] >= 3  # each epoch takes ~0.05 s
    assert res.rows == 40 and 0 < res.rows_per_s <= 800  # 40 rows per epoch, which sleeps >= 0.05 s
