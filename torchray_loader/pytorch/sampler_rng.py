"""The random state a user's sampler draws its epoch from, recorded so a resumed epoch draws it again.

``RandomSampler``, ``SubsetRandomSampler`` and ``WeightedRandomSampler`` draw from their own
``generator`` when they have one, else from torch's global RNG, when their iterator is first
advanced; a hand-written sampler may use ``random`` or ``numpy.random`` too. A resumed
:class:`~torchray_loader.pytorch.loader.RayStyleLoader` skips the indices of the batches already
delivered, so it must draw exactly the interrupted epoch's order: it records these states just before
the epoch's first index is drawn and, on resume, draws the first index from them again.

A sampler that keeps state of its own (a ``numpy.random.Generator``, a counter) tells it by the
``state_dict()`` / ``load_state_dict()`` pair torchdata's ``StatefulDataLoader`` uses: that state is
recorded at the same moment and loaded back before the replay. State a sampler keeps without that
pair cannot be recorded; such a sampler resumes correctly only in the epoch's first draw order.

Invariant: a recorded state holds plain Python values and CPU tensors only (a stateful sampler's
own ``state_dict()`` must too), so a loader's ``state_dict()`` still loads with
``torch.load(weights_only=True)``; it is recorded only for a sampler the user gave (the default
shuffle's order is already a function of a seed).

Example:
    >>> import torch
    >>> from torch.utils.data import RandomSampler
    >>> sampler = RandomSampler(range(6))
    >>> state = capture_rng(sampler_generators(sampler))
    >>> order = list(sampler)
    >>> list(replay_first(lambda: iter(sampler), state, sampler_generators(sampler))) == order
    True
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch

__all__ = ["sampler_generators", "stateful_samplers", "capture_rng", "replay_first", "record_first"]


def sampler_generators(*samplers: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects the given samplers (``None`` allowed) draw from.

    Example:
        >>> g = torch.Generator()
        >>> sampler_generators(torch.utils.data.RandomSampler(range(3), generator=g), None) == [g]
        True
    """
    out: list[torch.Generator] = []
    for s in samplers:
        g = getattr(s, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not o for o in out):
            out.append(g)
    return out


def stateful_samplers(*samplers: Any) -> list[Any]:
    """The distinct samplers (``None`` allowed) with their own ``state_dict`` and ``load_state_dict``.

    Example:
        >>> class Counting(torch.utils.data.Sampler):
        ...     def state_dict(self): return {}
        ...     def load_state_dict(self, state): pass
        >>> s = Counting(); stateful_samplers(s, None, s) == [s]
        True
    """
    out: list[Any] = []
    for s in samplers:
        if callable(getattr(s, "state_dict", None)) and callable(getattr(s, "load_state_dict", None)):
            if all(s is not o for o in out):
                out.append(s)
    return out


def _as_bytes(words: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(words, dtype="<u4").view(np.uint8).copy())


def _words(data: torch.Tensor) -> np.ndarray:
    return data.numpy().view("<u4").astype(np.uint32)


def capture_rng(generators: list[torch.Generator], samplers: list[Any] | None = None) -> dict[str, Any]:
    """The global RNGs' states (``random``, ``numpy.random``, torch), ``generators``' states and
    the ``state_dict()`` of each of ``samplers`` (see :func:`stateful_samplers`).

    Example:
        >>> sorted(capture_rng([]))
        ['generators', 'numpy', 'python', 'samplers', 'torch']
    """
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {  # the Mersenne Twister words as byte tensors, as torch keeps its own state
        "python": [version, _as_bytes(np.asarray(keys, dtype=np.uint32)), gauss],
        "numpy": [name, _as_bytes(mt), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
        # A copy: the sampler's live state goes on changing as it draws.
        "samplers": [copy.deepcopy(s.state_dict()) for s in samplers or ()],
    }


def _set_globals(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(_words(keys).tolist()), gauss))
    name, mt, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, _words(mt), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def replay_first(
    make: Callable[[], Iterator[Any]],
    state: dict[str, Any],
    generators: list[torch.Generator],
    samplers: list[Any] | None = None,
) -> Iterator[Any]:
    """``make()``'s items, its iterator created and first advanced from the recorded ``state``
    (``samplers`` first load the states recorded for them).

    The sampler's own generators are left where the draws take them (the epoch goes on drawing from
    them); the global RNGs are given back as they were, so the caller's own random sequence does not
    depend on the resume.

    Example:
        >>> state = capture_rng([]); a = torch.rand(1)
        >>> list(replay_first(lambda: iter(torch.rand(1).tolist()), state, [])) == a.tolist()
        True
    """
    if len(state["generators"]) != len(generators):
        raise ValueError(
            f"the saved state records {len(state['generators'])} sampler generator(s), this loader's sampler has "
            f"{len(generators)}: load a state into a loader built with the same sampler"
        )
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)
    recorded = state.get("samplers", [])  # absent from a state saved before samplers' states were
    if recorded and len(recorded) != len(samplers or ()):
        raise ValueError(
            f"the saved state records the state_dict() of {len(recorded)} sampler(s), this loader has "
            f"{len(samplers or ())} sampler(s) with one: load a state into a loader built with the same sampler"
        )
    for sampler, sampler_state in zip(samplers or (), recorded, strict=False):
        sampler.load_state_dict(copy.deepcopy(sampler_state))
    saved = capture_rng([])
    _set_globals(state)
    try:
        it = make()
        first = list(itertools.islice(it, 1))
    finally:
        _set_globals(saved)
    return itertools.chain(first, it)


def record_first(
    make: Callable[[], Iterator[Any]],
    generators: list[torch.Generator],
    record: Callable[[dict[str, Any]], None],
    samplers: list[Any] | None = None,
) -> Iterator[Any]:
    """``make()``'s items; just before its iterator is created (when the first item is asked for, as a
    DataLoader's sampler iterator draws then), ``record(capture_rng(generators, samplers))``.

    Example:
        >>> seen = []
        >>> list(record_first(lambda: iter([1, 2]), [], seen.append)), len(seen)
        ([1, 2], 1)
    """
    record(capture_rng(generators, samplers))
    yield from make()
