"""``prefetch(..., weigh=)``: the queue between the producing thread and the consumer is bounded by
the items' total weight (batches), not by their number."""

from __future__ import annotations

import time

from torchray_loader.iteration import prefetch


def _producer(sizes, produced):
    def make():
        for n in sizes:
            produced.append(n)
            yield list(range(n))

    return make


def test_waiting_items_weigh_at_most_the_depth():
    produced: list[int] = []
    ahead = []
    consumed = 0
    for _chunk in prefetch(_producer([3] * 10, produced), depth=7, weigh=len):
        time.sleep(0.02)  # a slow consumer: the thread runs as far ahead as it may
        consumed += 1
        ahead.append(len(produced) - consumed)
    # Two chunks of 3 fit under 7, a third does not; the thread may hold one more it has made.
    assert consumed == 10 and max(ahead) <= 3


def test_one_item_heavier_than_the_depth_still_passes():
    produced: list[int] = []
    out = [len(c) for c in prefetch(_producer([50, 1, 50], produced), depth=4, weigh=len)]
    assert out == [50, 1, 50]


def test_without_weights_the_depth_counts_items():
    produced: list[int] = []
    ahead = []
    for i, _ in enumerate(prefetch(_producer([100] * 8, produced), depth=2), start=1):
        time.sleep(0.02)
        ahead.append(len(produced) - i)
    assert max(ahead) <= 3
