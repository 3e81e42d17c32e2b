"""Seeds derived from seeds: one mixing function for every place that needs a stream per
(seed, epoch, ...) without importing torch (the executor, the loader, the samplers)."""

from __future__ import annotations

import numpy as np

__all__ = ["epoch_seed"]

_MASK63 = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int, *extra: int) -> int:
    """A non-negative 63-bit seed derived from ``seed`` and ``epoch`` (and ``extra`` ints).

    Nearby inputs give unrelated outputs (``numpy.random.SeedSequence`` mixing).

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    words = [int(seed) & _MASK63, int(epoch) & _MASK63, *(int(e) & _MASK63 for e in extra)]
    state = np.random.SeedSequence(words).generate_state(2, np.uint64)
    return int(state[0]) & _MASK63
