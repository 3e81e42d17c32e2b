"""``RayStyleLoader``: DataLoader's arguments, torchray's workers, resumable and rank-aware.

``RayStyleLoader(data, **dataloader_kwargs)`` is a ``torch.utils.data.IterableDataset`` whose
iteration yields batches. ``data`` may be

* a map-style torch ``Dataset``: indices come from exactly DataLoader's samplers (built by a real
  ``DataLoader`` constructor, so validation and defaults are DataLoader's own), batch ``n`` is
  fetched and collated by worker ``n % num_workers`` (as DataLoader's in-order dispatch does), each
  worker seeded ``base_seed + worker_id`` with ``get_worker_info()`` set. Output equals DataLoader's.
* a torch ``IterableDataset``: each worker iterates its own replica with ``get_worker_info()`` set,
  batches in the worker, and batches are interleaved round-robin, skipping exhausted workers - what
  DataLoader does.
* a torchray ``Dataset``: arguments map onto :meth:`Dataset.iter_torch_batches` (shuffle = seeded
  block-order shuffle plus a seeded local shuffle buffer, reseeded each epoch).

Invariants:

* An epoch's batches are a pure function of ``(arguments, epoch RNG state, rank, world size)``; the
  RNG state is captured at the start of the epoch, so ``state_dict()`` (a few ints and, with a user
  ``generator``, its state) plus the number of batches delivered is enough to resume exactly, in
  another process and with another ``num_workers``.
* Under ``torch.distributed`` (or ``RANK``/``WORLD_SIZE``), unless the user gave a sampler, every rank
  gets a disjoint contiguous share of the epoch's order, all ranks get the same number of batches,
  and the union is the whole epoch (see :func:`.sampling.rank_batch_sizes`).
* Inside a DataLoader worker (``DataLoader(loader, batch_size=None, num_workers=k)``) the loader
  runs without worker processes of its own and keeps only its share of the batches, so the outer
  DataLoader sees every batch exactly once. All outer workers shuffle with one shared seed (``seed``,
  else the outer DataLoader's base seed, which is new each epoch), so they agree on the permutation;
  ``set_epoch`` pins an epoch's order.
* Everything started for an epoch (worker processes, their shared memory) is stopped when the epoch's
  iterator ends, is closed, raises or is garbage collected; ``persistent_workers=True`` keeps the
  workers until :meth:`RayStyleLoader.close` or garbage collection of the loader.
* Each ``iter(loader)`` is the next epoch, independent of other live iterators, from any thread
  (``state_dict()`` describes the latest one). Persistent workers serve one thread at a time: an
  iterator of a second thread raises ``RuntimeError`` while another thread's iterator uses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data._utils import worker as _torch_worker
from torch.utils.data._utils.collate import default_collate, default_convert

from ..context import DataContext
from ..dataset import (
    _ROW_PRESERVING,
    DataIterator,
    Dataset,
    MaterializedDataset,
    _known_num_rows,
    _new_block_store,
)
from ..errors import TaskTimeoutError
from ..execution.caught import CaughtError
from ..execution.pool import SharedRef, TaskPool, make_pool
from ..integrations.ray import is_ray_dataset, ray_iterable_to_batches
from ..io.read_task import ReadTask
from ..plan import AllToAll, InputBlocks, LogicalOp, MapStage, Read
from .batched_fetch import batched_fetch
from .collate import collate_into_transfer_file
from .convert import numpy_to_torch_value
from .device import DeviceFeeder, resolve_device
from .sampler_rng import record_first, replay_first, sampler_generators, stateful_samplers
from .sampling import (
    RoundRobinSplitter,
    distributed_rank_world,
    epoch_seed,
    rank_batch_sizes,
    recut,
    split_ranges,
)

__all__ = ["RayStyleLoader"]

_STATE_VERSION = 1
#: Guards the per-loader count of iterators using persistent workers (see ``_claim_persistent``).
_PERSISTENT_LOCK = threading.Lock()
#: Seed used for shuffling under torch.distributed when neither ``seed`` nor ``generator`` is given,
#: so that every rank draws the same order (DistributedSampler's default, for the same reason).
_DISTRIBUTED_DEFAULT_SEED = 0


# =============================================================================== worker side
#
# Tasks run in pool workers (or, for an inline pool, in the loader's own process). A *virtual worker*
# is what DataLoader calls a worker: an id, a seed, a ``get_worker_info()``, an RNG stream that
# continues from task to task. Its per-process state lives in ``_SLOTS`` keyed by ``spec.key``. When a
# task runs in the loader's own process (inline), the process-global RNGs are swapped in and out
# around it, so emulated workers neither see nor disturb the trainer's RNG state.


@dataclass(frozen=True)
class _WorkerSpec:
    key: str  # one virtual worker's lifetime (per epoch, or per loader with persistent_workers)
    worker_id: int
    num_workers: int
    base_seed: int
    init_fn: Callable[[int], None] | None
    owner_pid: int  # the loader's process

    @property
    def seed(self) -> int:
        return self.base_seed + self.worker_id


class _Slot:
    __slots__ = ("info", "rng")

    def __init__(self, info: Any) -> None:
        self.info = info
        self.rng: tuple[Any, Any, Any] | None = None  # saved RNG states while not running (inline)


_SLOTS: dict[str, _Slot] = {}
# spec.key -> {epoch key: replica iterator}: a persistent worker serves several iterators of its
# loader at once (they may interleave); the oldest goes beyond _MAX_OPEN_ITERATORS, an ended one at once.
_ITERS: dict[str, dict[str, _IterState]] = {}
_MAX_OPEN_ITERATORS = 8


def _rng_get() -> tuple[Any, Any, Any]:
    return random.getstate(), torch.get_rng_state(), np.random.get_state()


def _rng_set(states: tuple[Any, Any, Any]) -> None:
    random.setstate(states[0])
    torch.set_rng_state(states[1])
    np.random.set_state(states[2])


@contextlib.contextmanager
def _as_worker(spec: _WorkerSpec, dataset: Any) -> Iterator[None]:
    """Run the body as virtual worker ``spec``: seeded as DataLoader seeds its workers on first use
    (then ``worker_init_fn``), with ``get_worker_info()`` describing it."""
    inline = os.getpid() == spec.owner_pid
    saved = _rng_get() if inline else None
    prev_info = _torch_worker._worker_info
    slot = _SLOTS.get(spec.key)
    try:
        if slot is None:
            info = _torch_worker.WorkerInfo(id=spec.worker_id, num_workers=spec.num_workers, seed=spec.seed, dataset=dataset)
            slot = _SLOTS[spec.key] = _Slot(info)
            random.seed(spec.seed)
            torch.manual_seed(spec.seed)
            np.random.seed(_torch_worker._generate_state(spec.base_seed, spec.worker_id))
            _torch_worker._worker_info = info
            if spec.init_fn is not None:
                spec.init_fn(spec.worker_id)
        else:
            if inline and slot.rng is not None:
                _rng_set(slot.rng)
            _torch_worker._worker_info = slot.info
        yield
    finally:
        _torch_worker._worker_info = prev_info
        if saved is not None:
            if slot is not None:
                slot.rng = _rng_get()
            _rng_set(saved)


def _forget_workers(prefix: str, slots: dict[str, Any] = _SLOTS, iters: dict[str, Any] = _ITERS) -> None:
    """Drop this process's state of the virtual workers whose key starts with ``prefix``. (The
    registries are bound as defaults: this also runs in module teardown, when globals are None.)"""
    for key in [k for k in slots if k.startswith(prefix)]:
        del slots[key]
    for key in [k for k in iters if k.startswith(prefix)]:
        del iters[key]


def _collate(collate_fn: Callable[[Any], Any], data: Any) -> Any:
    """``collate_fn(data)``; in a worker process, ``default_collate`` is replaced by
    :func:`collate_into_transfer_file` (same result).

    In a worker, ``default_collate`` builds the batch in torch shared memory (DataLoader then hands
    it over by file descriptor): several times the cost of a plain stack. Here the transfer file is
    the handoff, so large tensors are stacked inside it. Other collate functions see the worker
    info as in DataLoader."""
    if collate_fn is default_collate and _torch_worker._worker_info is not None:
        with _no_worker_info():
            return collate_into_transfer_file(data)
    return collate_fn(data)


def _fetch(dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any], index: Any) -> Any:
    """A map-style batch: for well-known in-memory datasets one vectorised gather, else
    :func:`_fetch_samples` (both give DataLoader's result)."""
    if auto_collation:
        fast = batched_fetch(dataset, collate_fn)
        if fast is not None:
            return fast(index)
    return _fetch_samples(dataset, auto_collation, collate_fn, index)


def _fetch_samples(dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any], index: Any) -> Any:
    """DataLoader's map-style fetch: ``__getitems__`` when the dataset has it, else ``__getitem__``."""
    if auto_collation:
        getitems = getattr(dataset, "__getitems__", None)
        data = getitems(index) if getitems else [dataset[i] for i in index]
    else:
        data = dataset[index]
    return _collate(collate_fn, data)


def _fetch_in_worker(
    spec: _WorkerSpec,
    dataset: SharedRef,
    auto_collation: bool,
    collate_fn: Callable[[Any], Any],
    operator: str,
    index: Any,
) -> Any:
    """Pool task: one batch of a map-style dataset, fetched and collated in a worker; a
    :class:`CaughtError` if the dataset or ``collate_fn`` raised (a ``worker_init_fn`` error still
    fails the task)."""
    data = dataset.get()
    with _as_worker(spec, data):
        try:
            return _fetch(data, auto_collation, collate_fn, index)
        except Exception as exc:
            return CaughtError.of(exc, operator)


class _LoaderIterator:
    """What iterating a :class:`RayStyleLoader` returns: the batches, and in place of a batch whose
    fetch raised, that exception; the iterator goes on after it (the next ``next()`` gives the next
    batch), as DataLoader's does, so a loop that skips bad batches loses nothing else.

    Example:
        >>> it = _LoaderIterator(iter([1, CaughtError.of(ValueError("bad"), "fetch"), 3]))
        >>> next(it)
        1
        >>> try:
        ...     next(it)
        ... except ValueError as e:
        ...     print(e)
        bad
        >>> next(it)
        3
    """

    __slots__ = ("_batches",)

    def __init__(self, batches: Iterator[Any]) -> None:
        self._batches = batches

    def __iter__(self) -> _LoaderIterator:
        return self

    def __next__(self) -> Any:
        batch = next(self._batches)
        if type(batch) is CaughtError:
            batch.reraise()
        return batch

    def close(self) -> None:
        """Stop the epoch now: workers are released (as when the iterator is dropped)."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()


class _ShardEnd:
    """Returned by an iterable-dataset task once the worker's replica is exhausted."""

    def __reduce__(self) -> Any:
        return (_ShardEnd, ())


class _IterState:
    __slots__ = ("it", "ended")

    def __init__(self, it: Iterator[Any] | None) -> None:
        self.it = it
        self.ended = it is None


def _next_iterable_batch(
    state: _IterState, batch_size: int | None, drop_last: bool, collate_fn: Callable[[Any], Any]
) -> Any:
    """DataLoader's ``_IterableDatasetFetcher.fetch``: raises StopIteration at the end."""
    if state.ended or state.it is None:
        raise StopIteration
    if batch_size is None:
        return _collate(collate_fn, next(state.it))
    data = []
    for _ in range(batch_size):
        try:
            data.append(next(state.it))
        except StopIteration:
            state.ended = True
            break
    if not data or (drop_last and len(data) < batch_size):
        raise StopIteration
    return _collate(collate_fn, data)


def _iterable_task(
    spec: _WorkerSpec,
    epoch_key: str,
    dataset_ref: SharedRef,
    batch_size: int | None,
    drop_last: bool,
    collate_fn: Callable[[Any], Any],
    seq: int,
) -> Any:
    """Pool task: the next batch of virtual worker ``spec``'s replica (``seq``-th request)."""
    dataset = dataset_ref.get()
    with _as_worker(spec, dataset):
        open_iters = _ITERS.setdefault(spec.key, {})
        state = open_iters.get(epoch_key)
        if state is None:
            if seq != 0:
                raise RuntimeError(
                    f"IterableDataset worker {spec.worker_id} lost its iterator (its process was restarted, or "
                    f"more than {_MAX_OPEN_ITERATORS} iterators of the loader were open at once); an "
                    "IterableDataset cannot be resumed in the middle of a worker's stream"
                )
            state = open_iters[epoch_key] = _IterState(iter(dataset))
            while len(open_iters) > _MAX_OPEN_ITERATORS:
                del open_iters[next(iter(open_iters))]
        try:
            return _next_iterable_batch(state, batch_size, drop_last, collate_fn)
        except StopIteration:
            del open_iters[epoch_key]  # free the replica's iterator now
            return _ShardEnd()


@contextlib.contextmanager
def _no_worker_info() -> Iterator[None]:
    prev = _torch_worker._worker_info
    _torch_worker._worker_info = None
    try:
        yield
    finally:
        _torch_worker._worker_info = prev


# =============================================================================== Arrow sharding


def _has_unseeded_all_to_all(plan: LogicalOp) -> bool:
    """Whether ``plan`` holds an all-to-all operator given no seed (its output differs per execution)."""
    if isinstance(plan, AllToAll) and plan.seed is None:
        return True
    return any(_has_unseeded_all_to_all(op) for op in plan.inputs)


def _row_units(plan: LogicalOp) -> tuple[list[Any], list[int], Callable[[list[tuple[int, int, int]]], LogicalOp]] | None:
    """Split a plan ``MapStage* (Read | InputBlocks)`` with row-preserving maps into its source units
    (read tasks or blocks) with known row counts, plus a function that rebuilds the plan over row
    slices ``(unit, lo, hi)`` of those units. None when the plan has another shape."""
    stages: list[MapStage] = []
    op = plan
    while isinstance(op, MapStage):
        if not all(isinstance(t, _ROW_PRESERVING) for t in op.transforms):
            return None
        stages.append(op)
        op = op.input
    units: list[Any]
    if isinstance(op, Read):
        if any(t.num_rows is None for t in op.tasks):
            return None
        units, counts = list(op.tasks), [int(t.num_rows) for t in op.tasks]  # type: ignore[arg-type]
    elif isinstance(op, InputBlocks):
        units = [op.blocks[i] for i in range(len(op.blocks))]
        counts = [b.num_rows for b in units]
    else:
        return None
    source = op

    def rebuild(pieces: list[tuple[int, int, int]]) -> LogicalOp:
        new: LogicalOp
        if isinstance(source, Read):
            tasks = tuple(
                ReadTask(functools.partial(_sliced_read, units[u], lo, hi), num_rows=hi - lo, paths=units[u].paths)
                for u, lo, hi in pieces
            )
            new = dataclasses.replace(source, tasks=tasks)
        else:
            new = InputBlocks([units[u].slice(lo, hi - lo) for u, lo, hi in pieces], source.name)
        for st in reversed(stages):
            new = MapStage(new, st.transforms, st.compute)
        return new

    return units, counts, rebuild


def _sliced_read(task: ReadTask, lo: int, hi: int) -> Iterator[Any]:
    """Rows ``[lo, hi)`` of a read task's output (reading stops once past ``hi``)."""
    offset = 0
    for block in task():
        n = block.num_rows
        a, b = max(lo, offset), min(hi, offset + n)
        if b > a:
            yield block.slice(a - offset, b - a)
        offset += n
        if offset >= hi:
            return


def _pieces(counts: list[int], order: list[int], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """Rows ``[lo, hi)`` of the concatenation of units in ``order`` as ``(unit, lo, hi)`` slices."""
    out = []
    offset = 0
    for u in order:
        n = counts[u]
        a, b = max(lo, offset), min(hi, offset + n)
        if b > a:
            out.append((u, a - offset, b - offset))
        offset += n
        if offset >= hi:
            break
    return out


# =============================================================================== the loader


@dataclass
class _Epoch:
    """What fixes one epoch's batches; ``state_dict()`` is this plus the count delivered."""

    epoch: int
    skip: int = 0  # batches delivered before a resume: not produced again
    yielded: int = 0  # batches delivered in this epoch (skip included)
    finished: bool = False
    gen_state: torch.Tensor | None = None  # the user generator's state at the start of the epoch
    base_seed: int | None = None  # workers' base seed (drawn as DataLoader draws it)
    base_seed_drawn: bool = True  # whether this epoch drew it (not with persistent workers' later epochs)
    sampler_seed: int | None = None  # seed of the default RandomSampler when no generator is given
    sampler_rng: dict[str, Any] | None = None  # RNG states a user's sampler drew this epoch from
    sampler_epochs: list[int | None] | None = None  # a user's samplers' ``epoch`` (DistributedSampler)
    arrow_seed: int | None = None  # shuffle seed for a torchray Dataset
    plan_seed: int | None = None  # a torchray Dataset's random operators given no seed draw from it
    layout: int = 0  # virtual workers of an IterableDataset epoch (its batches depend on it)
    started: bool = True  # False: a state taken between epochs (the next epoch has not begun)
    stats: dict[str, float] = field(default_factory=lambda: {"wait_s": 0.0, "wall_s": 0.0})


def _sampler_epoch(sampler: Any) -> int | None:
    """A sampler's own epoch where it has one (``DistributedSampler.epoch``, set by ``set_epoch``)."""
    epoch = getattr(sampler, "epoch", None)
    return int(epoch) if hasattr(sampler, "set_epoch") and isinstance(epoch, (int, np.integer)) else None


def _draw_seed(generator: torch.Generator | None) -> int:
    # DataLoader's _base_seed draw (also RandomSampler's seed draw when it has no generator).
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def _close_pools(pools: list[TaskPool]) -> None:
    while pools:
        pools.pop().close()


def _pools_finalizer(loader: RayStyleLoader) -> weakref.finalize:
    """Close ``loader``'s persistent pools when it is garbage collected. Not at interpreter exit:
    the package's ordered exit steps stop prefetch threads first, then shut down open pools."""
    fin = weakref.finalize(loader, _close_pools, loader._pools)
    fin.atexit = False
    return fin


class _LenOne(torch.utils.data.Dataset):
    """Stand-in map-style dataset: lets a DataLoader constructor validate arguments for Arrow input."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i


class RayStyleLoader(IterableDataset):
    """A drop-in ``DataLoader`` replacement running on torchray's worker processes.

    Takes DataLoader's arguments, plus keyword-only ``device`` (batches arrive there, staged in pinned
    memory and copied ahead on a side CUDA stream), ``seed`` (a reproducible shuffle that changes each epoch),
    ``shuffle_buffer_size`` (torchray Datasets: rows in the local shuffle window) and
    ``shard_by_rank`` (default True: under ``torch.distributed`` each rank gets a disjoint share,
    every rank the same number of batches).

    Iterating it yields one epoch; iterating again starts the next (or call :meth:`set_epoch`).
    :meth:`state_dict` / :meth:`load_state_dict` resume mid-epoch exactly.

    Where arguments differ from DataLoader: batches always arrive in order (``in_order=False`` is
    accepted and changes nothing, so results stay deterministic); ``timeout`` bounds one batch's work
    in a worker (then ``RuntimeError``, as DataLoader); ``pin_memory_device`` is ignored (deprecated in
    DataLoader too); for a torchray Dataset ``collate_fn`` receives a dict of numpy arrays (Ray's
    semantics), ``prefetch_factor * num_workers`` batches are prefetched, and ``sampler`` /
    ``batch_sampler`` raise ``ValueError``. A torch IterableDataset is not split by rank (as with
    DataLoader, it shards itself if it wants to).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(6))
        >>> loader = RayStyleLoader(ds, batch_size=4)
        >>> [b[0].tolist() for b in loader]
        [[0, 1, 2, 3], [4, 5]]
        >>> len(loader)
        2
    """

    def __init__(
        self,
        data: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        device: str | torch.device | None = None,
        seed: int | None = None,
        shuffle_buffer_size: int | None = None,
        shard_by_rank: bool = True,
    ) -> None:
        if isinstance(data, DataIterator):
            data = data._dataset
        if isinstance(data, Dataset) or is_ray_dataset(data):
            # A ray.data Dataset/DataIterator (e.g. Ray Train's get_dataset_shard) iterates with the
            # same Arrow-input semantics, through Ray (integrations/ray.py).
            self._kind = "arrow" if isinstance(data, Dataset) else "ray"
            if sampler is not None or batch_sampler is not None:
                which = "sampler" if sampler is not None else "batch_sampler"
                raise ValueError(
                    f"{which} is not supported for a torchray Dataset: use shuffle=True (with seed=) for a "
                    "random order reshuffled each epoch, ds.random_shuffle(seed=...) for a full shuffle, "
                    "ds.filter(...) or ds.split(...) for subsets; under torch.distributed each rank already "
                    "gets its own shard"
                )
            # DataLoader's own constructor validates the shared arguments, so errors read the same.
            probe = DataLoader(
                _LenOne(), batch_size, shuffle, None, None, num_workers, None, pin_memory, drop_last, timeout,
                worker_init_fn, multiprocessing_context, generator, prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers, pin_memory_device=pin_memory_device, in_order=in_order,
            )
            # What DataLoader would use (for Arrow input: no samplers; collate_fn gets numpy dicts).
            self.sampler: Any = None
            self.batch_sampler: Any = None
            self.collate_fn: Any = collate_fn
            self._auto_collation = batch_size is not None
            shuffle = bool(shuffle)
            if shuffle and batch_size is None:
                raise ValueError(
                    "shuffle=True over a torchray Dataset needs a batch_size: with batch_size=None each "
                    "batch is a whole block (as Ray's iter_torch_batches); use ds.random_shuffle() instead"
                )
        else:
            if isinstance(data, RayStyleLoader):
                raise TypeError("data is already a RayStyleLoader")
            if not isinstance(data, IterableDataset) and not hasattr(data, "__getitem__"):
                raise TypeError(
                    "data must be a torchray Dataset, a torch map-style Dataset (with __getitem__) or a torch "
                    f"IterableDataset, got {type(data).__name__}"
                )
            probe = DataLoader(
                data, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn, pin_memory, drop_last,
                timeout, worker_init_fn, multiprocessing_context, generator, prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers, pin_memory_device=pin_memory_device, in_order=in_order,
            )
            self._kind = "iterable" if isinstance(data, IterableDataset) else "map"
            self.sampler = probe.sampler
            self.batch_sampler = probe.batch_sampler
            self.collate_fn = probe.collate_fn
            self._auto_collation = probe._auto_collation
            if shuffle_buffer_size is not None:
                raise ValueError("shuffle_buffer_size applies to torchray Datasets only")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} (seed= takes an int)")
        if shuffle_buffer_size is not None:
            if isinstance(shuffle_buffer_size, bool) or not isinstance(shuffle_buffer_size, int) or shuffle_buffer_size < 1:
                raise ValueError(f"shuffle_buffer_size must be a positive int, got {shuffle_buffer_size!r}")
            if not shuffle:
                raise ValueError("shuffle_buffer_size needs shuffle=True")
        self._feeder_args = (device, pin_memory)
        resolve_device(device)  # validates device now (without starting CUDA)

        self.dataset = data
        self.batch_size = probe.batch_size
        self.drop_last = probe.drop_last
        self.shuffle = bool(shuffle)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = probe.multiprocessing_context
        self.generator = generator
        self.prefetch_factor = probe.prefetch_factor
        if self.prefetch_factor is not None and (
            isinstance(self.prefetch_factor, bool) or not isinstance(self.prefetch_factor, int) or self.prefetch_factor < 1
        ):  # DataLoader asserts this when it starts its workers
            raise ValueError(f"prefetch_factor must be a positive int, got {self.prefetch_factor!r}")
        self.persistent_workers = persistent_workers
        self.in_order = in_order  # results are always delivered in order (deterministic)
        self.device = device
        self.seed = None if seed is None else int(seed)
        self.shuffle_buffer_size = shuffle_buffer_size
        self.shard_by_rank = shard_by_rank
        # We built the RandomSampler (shuffle=True, no sampler): we may re-seed it per epoch.
        self._default_random = self._kind == "map" and sampler is None and batch_sampler is None and self.shuffle
        self._user_sampler = sampler is not None or batch_sampler is not None

        self._uid = uuid.uuid4().hex
        self._epoch_counter = 0  # the epoch of the next __iter__ unless set_epoch / a resume says otherwise
        self._explicit_epoch: int | None = None
        self._pending: dict[str, Any] | None = None  # a loaded state, applied by the next __iter__
        self._current: _Epoch | None = None
        self._pools: list[TaskPool] = []  # persistent workers
        self._pools_finalizer = _pools_finalizer(self)
        # Iterators using the persistent pools right now, and the thread they run in (see _claim_persistent).
        self._persistent_users = 0
        self._persistent_thread: int | None = None
        self._materialized: Dataset | None = None
        self._materialized_seed: int | None = None  # the plan seed it ran with, if the plan used one
        self._persistent_seed: int | None = None  # base seed of persistent workers (first epoch's)
        self._last_dataset: Dataset | None = None

    # ------------------------------------------------------------------ public helpers

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the following iterations (seeds shuffles; forwarded to a sampler's
        ``set_epoch``, e.g. ``DistributedSampler``). After :meth:`load_state_dict` of a state taken
        between epochs it sets the epoch that state starts; a state taken mid-epoch resumes its own.

        Example:
            >>> import torch
            >>> loader = RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(4)), shuffle=True, seed=1)
            >>> loader.set_epoch(3)
            >>> a = [b[0].item() for b in loader]; b = [b[0].item() for b in loader]
            >>> a == b
            True
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._explicit_epoch = int(epoch)
        pending = self._pending
        if pending is not None and pending.get("num_workers") is None and pending["batches_yielded"] == 0:
            # A loaded state taken between epochs only says where the next epoch starts; a resumed
            # mid-epoch state keeps its own epoch (its batches are fixed).
            pending["epoch"] = int(epoch)
        for s in self._samplers():
            if s is not None and hasattr(s, "set_epoch"):
                s.set_epoch(int(epoch))

    def _samplers(self) -> tuple[Any, Any, Any]:
        """The sampler, the batch sampler and the batch sampler's sampler (``None`` where absent)."""
        return self.sampler, self.batch_sampler, getattr(self.batch_sampler, "sampler", None)

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: load it into a new loader (same arguments, any ``num_workers``,
        any process) and the next iteration yields exactly the remaining batches of the epoch.

        Example:
            >>> import torch
            >>> loader = RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(6)), batch_size=2, shuffle=True, seed=0)
            >>> it = iter(loader); first = next(it)
            >>> state = loader.state_dict()
            >>> fresh = RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(6)), batch_size=2, shuffle=True, seed=0)
            >>> fresh.load_state_dict(state)
            >>> rest = [b[0] for b in fresh]
            >>> sorted(torch.cat([first[0], *rest]).tolist())
            [0, 1, 2, 3, 4, 5]
        """
        if self._pending is not None:
            return dict(self._pending)
        cur = self._current
        if cur is None or cur.finished:
            epoch = self._next_epoch_number(peek=True)
            ep = _Epoch(epoch, gen_state=self._generator_state(), started=False)
            if self.persistent_workers and self._persistent_seed is not None:
                # Persistent workers draw no new base seed from the generator in later epochs: the
                # resumed loader must not either, or the permutation drawn after it differs.
                ep.base_seed, ep.base_seed_drawn = self._persistent_seed, False
            return self._state(ep, 0)
        return self._state(cur, cur.yielded)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration continues that epoch where it stopped.

        Example:
            >>> import torch
            >>> loader = RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(3)))
            >>> loader.load_state_dict({"version": 1, "kind": "map", "epoch": 0, "batches_yielded": 2})
            >>> [b[0].item() for b in loader]
            [2]
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a RayStyleLoader state (version {_STATE_VERSION}): {state!r}")
        if state.get("kind") != self._kind:
            raise ValueError(f"state is for a {state.get('kind')!r} loader, this one iterates a {self._kind!r} input")
        for field_name in ("epoch", "batches_yielded"):
            value = state.get(field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"state[{field_name!r}] must be a non-negative int, got {value!r}")
        self._pending = dict(state)
        self._epoch_counter = int(state["epoch"])
        self._explicit_epoch = None

    def stats(self) -> str:
        """Execution statistics of the latest epoch (a torchray Dataset's operator stats, plus the time
        the training loop spent waiting for batches).

        Example:
            >>> import torch
            >>> loader = RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(4)), batch_size=2)
            >>> _ = list(loader)
            >>> "2 batches" in loader.stats()
            True
        """
        cur = self._current
        if cur is None:
            return "(not iterated yet)"
        wall, wait = cur.stats["wall_s"], cur.stats["wait_s"]
        n = cur.yielded - cur.skip
        line = (
            f"RayStyleLoader epoch {cur.epoch}: {n} batches in {wall:.3f}s "
            f"({n / wall if wall > 0 else 0.0:.1f} batches/s), waited for data {wait:.3f}s "
            f"({100 * wait / wall if wall > 0 else 0.0:.1f}%)"
        )
        if self._last_dataset is not None:
            return f"{self._last_dataset.stats()}\n{line}"
        return line

    def close(self) -> None:
        """Stop persistent workers now (they also stop when the loader is garbage collected).

        Example:
            >>> import torch
            >>> RayStyleLoader(torch.utils.data.TensorDataset(torch.arange(2))).close()
        """
        _close_pools(self._pools)
        _forget_workers(self._uid)

    def __len__(self) -> int:
        if self._kind == "map":
            rank, world = self._rank_world()
            if world > 1:
                return len(self._rank_sizes(len(self.sampler), rank, world))
            return len(self.batch_sampler if self._auto_collation else self.sampler)
        if self._kind == "iterable":
            length = len(self.dataset)
            if self.batch_size is not None:
                length = length // self.batch_size if self.drop_last else math.ceil(length / self.batch_size)
            return length
        if self._kind == "ray":
            raise TypeError("len() of a RayStyleLoader over a Ray dataset is not known before running it")
        n = _known_num_rows(self.dataset._plan)
        if n is None and self._materialized is not None:
            n = self._materialized.count()
        if n is None:
            raise TypeError(
                "len() of a RayStyleLoader over a torchray Dataset whose row count is not known before "
                "running it; call ds = ds.materialize() first, or count batches while iterating"
            )
        rank, world = self._rank_world()
        if world > 1:
            return len(rank_batch_sizes(n, world, self.batch_size or 1, self.drop_last)[rank])
        if self.batch_size is None:
            raise TypeError("len() is unknown with batch_size=None (one batch per block)")
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __repr__(self) -> str:
        return (
            f"RayStyleLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"num_workers={self.num_workers})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into DataLoader workers (spawn) or by users: no processes, no finalizer.
        state = self.__dict__.copy()
        state["_pools"] = []
        state["_pools_finalizer"] = None
        state["_current"] = None
        state["_persistent_users"] = 0
        state["_persistent_thread"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pools_finalizer = _pools_finalizer(self)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:
        ep = self._begin_epoch()
        feeder = DeviceFeeder(*self._feeder_args)
        if self._kind == "map":
            batches = self._iter_map(ep)
        elif self._kind == "iterable":
            batches = self._iter_iterable(ep)
        elif self._kind == "ray":
            batches = ray_iterable_to_batches(
                self.dataset, batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=ep.epoch,
                drop_last=self.drop_last, collate_fn=self.collate_fn, dtypes=None, device=None,
                prefetch_batches=(self.prefetch_factor or 2) * max(1, self.num_workers),
                local_shuffle_buffer_size=self.shuffle_buffer_size, skip_batches=ep.skip,
            )
        else:
            batches = self._iter_arrow(ep, feeder)  # moves its own batches (whole runs at a time)
        if feeder.active and self._kind != "arrow":
            batches = feeder.feed(batches)
        return _LoaderIterator(self._deliver(ep, batches))

    def _deliver(self, ep: _Epoch, batches: Iterator[Any]) -> Iterator[Any]:
        # Counts what the training loop received (the resume point) and how long it waited.
        # ``clock`` is bound now: an iterator left open at interpreter exit is finalized after module
        # globals (``time``) are torn down, and its ``finally`` must still run cleanly.
        clock = time.perf_counter
        start = clock()
        try:
            while True:
                t0 = clock()
                try:
                    batch = next(batches)
                except StopIteration:
                    ep.finished = True
                    return
                except TaskTimeoutError as exc:
                    raise RuntimeError(f"RayStyleLoader timed out after {self.timeout} seconds") from exc
                finally:
                    now = clock()
                    ep.stats["wait_s"] += now - t0
                    ep.stats["wall_s"] = now - start
                ep.yielded += 1
                yield batch
        finally:
            ep.stats["wall_s"] = clock() - start
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _next_epoch_number(self, peek: bool = False) -> int:
        if self._explicit_epoch is not None:
            return self._explicit_epoch
        epoch = self._epoch_counter
        if not peek:
            self._epoch_counter += 1
        return epoch

    def _generator_state(self) -> torch.Tensor | None:
        return None if self.generator is None else self.generator.get_state()

    def _state(self, ep: _Epoch, yielded: int) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "kind": self._kind,
            "epoch": ep.epoch,
            "batches_yielded": yielded,
            "generator_state": None if ep.gen_state is None else ep.gen_state.clone(),
            "base_seed": ep.base_seed,
            "base_seed_drawn": ep.base_seed_drawn,
            "sampler_seed": ep.sampler_seed,
            "sampler_rng": ep.sampler_rng,
            "sampler_epochs": ep.sampler_epochs,
            "arrow_seed": ep.arrow_seed,
            "plan_seed": ep.plan_seed,
            "num_workers": ep.layout if ep.started else None,
        }

    def _begin_epoch(self) -> _Epoch:
        """Fix the epoch's randomness now (as DataLoader draws its seeds in ``iter()``)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            ep = _Epoch(
                int(pending["epoch"]),
                skip=int(pending["batches_yielded"]),
                gen_state=pending.get("generator_state"),
                base_seed=pending.get("base_seed"),
                base_seed_drawn=bool(pending.get("base_seed_drawn", True)),
                sampler_seed=pending.get("sampler_seed"),
                sampler_rng=pending.get("sampler_rng"),
                sampler_epochs=pending.get("sampler_epochs"),
                arrow_seed=pending.get("arrow_seed"),
                plan_seed=pending.get("plan_seed"),
            )
            # A started epoch keeps its worker layout (an IterableDataset's batches depend on it).
            ep.layout = self.num_workers if pending.get("num_workers") is None else int(pending["num_workers"])
            ep.yielded = ep.skip
            self._epoch_counter = ep.epoch + 1
        else:
            ep = _Epoch(self._next_epoch_number(), layout=self.num_workers)
            outer_seed = self._outer_base_seed()
            if outer_seed is not None and self._explicit_epoch is None:
                # In a DataLoader worker this copy's epoch counter restarts with every (non-persistent)
                # worker; the outer DataLoader's base seed, new each epoch, keeps epochs reshuffling.
                ep.epoch = epoch_seed(ep.epoch, outer_seed)
        if self.generator is not None:
            if ep.gen_state is not None:
                self.generator.set_state(ep.gen_state)
            else:
                ep.gen_state = self.generator.get_state()
        self._current = ep
        return ep

    def _rank_world(self) -> tuple[int, int]:
        if not self.shard_by_rank or self._user_sampler or self._kind == "iterable":
            return 0, 1
        return distributed_rank_world()

    def _rank_sizes(self, num_rows: int, rank: int, world: int) -> list[int]:
        return rank_batch_sizes(num_rows, world, self.batch_size or 1, self.drop_last)[rank]

    def _outer_worker(self) -> tuple[int, int] | None:
        """``(id, num_workers)`` when running inside a DataLoader worker process."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return None
        return info.id, info.num_workers

    def _outer_base_seed(self) -> int | None:
        """The outer DataLoader's base seed (the same in all its workers, new each epoch), when running
        inside one of its workers."""
        info = torch.utils.data.get_worker_info()
        return None if info is None else int(info.seed - info.id)

    def _shared_seed(self, world: int) -> int | None:
        """A shuffle seed that every rank and every outer DataLoader worker agrees on, when the user
        gave neither ``seed`` nor ``generator`` (their own RNGs differ, so draws would disagree)."""
        if self.seed is not None:
            return self.seed
        if self.generator is not None:
            return None
        if world > 1:
            return _DISTRIBUTED_DEFAULT_SEED
        return self._outer_base_seed()

    def _processes(self) -> int:
        return 0 if self._outer_worker() is not None else self.num_workers

    def _ctx(self, processes: int) -> DataContext:
        ctx = DataContext.get_current().copy()
        ctx.num_workers = processes
        mp = self.multiprocessing_context
        if mp is not None:
            ctx.start_method = mp if isinstance(mp, str) else mp.get_start_method()  # type: ignore[assignment]
        if self.timeout > 0:
            ctx.task_timeout_s = float(self.timeout)
            ctx.max_task_retries = 0
        return ctx

    def _dataset_ref(self) -> SharedRef:
        """The torch dataset as task functions carry it: workers get it once, when they start (by
        fork inheritance, as DataLoader's do), not pickled with every epoch's functions."""
        return SharedRef(f"dataset-{self._uid}", self.dataset)

    def _get_pools(self, count: int, processes: int, ctx: DataContext) -> tuple[list[TaskPool], bool]:
        """``count`` single-worker pools (inline ones when ``processes == 0``) and whether they are
        the loader's persistent pools (not to be closed at the end of the epoch). Their workers hold
        the dataset of :meth:`_dataset_ref`."""
        if processes == 0:
            return [make_pool(0, ctx) for _ in range(count)], False
        # One pool per worker, each bounding its own in-flight bytes: together they keep the budget.
        ctx = ctx.copy()
        ctx.memory_budget_bytes = max(1, ctx.memory_budget_bytes // count)
        shared = {self._dataset_ref().key: self.dataset} if self._kind in ("map", "iterable") else None
        if self.persistent_workers and count == processes:
            self._claim_persistent()
            try:
                if len(self._pools) != count:
                    _close_pools(self._pools)
                    self._pools.extend(make_pool(1, ctx, name=f"loader-{i}", shared=shared) for i in range(count))
            except BaseException:
                self._release_persistent()
                raise
            return self._pools, True
        pools: list[TaskPool] = []
        try:
            for i in range(count):
                pools.append(make_pool(1, ctx, name=f"loader-{i}", shared=shared))
        except BaseException:
            _close_pools(pools)
            raise
        return pools, False

    def _claim_persistent(self) -> None:
        """Iterators of one loader are independent epochs, from any thread, each with its own worker
        processes; except that ``persistent_workers=True`` workers are shared, and a worker pool is
        driven by one thread at a time. So while iterators of this thread use them, an iterator of
        another thread raises instead of corrupting them (several iterators of one thread may
        interleave)."""
        with _PERSISTENT_LOCK:
            me = threading.get_ident()
            if self._persistent_users and self._persistent_thread != me:
                raise RuntimeError(
                    "this RayStyleLoader(persistent_workers=True) is being iterated by another thread, and its "
                    "persistent worker processes serve one thread at a time; give each thread its own loader, "
                    "or use persistent_workers=False (then every iterator has its own workers)"
                )
            self._persistent_thread = me
            self._persistent_users += 1

    def _release_persistent(self, _lock: Any = _PERSISTENT_LOCK) -> None:
        # The lock is bound at definition: an iterator left open at interpreter exit is finalized
        # after module globals are cleared, and must still release cleanly.
        with _lock:
            self._persistent_users -= 1
            if not self._persistent_users:
                self._persistent_thread = None

    def _end_worker_epoch(
        self, gens: list[Iterator[Any]], pools: list[TaskPool], persistent: bool, key: str,
        _close: Any = _close_pools, _forget: Any = _forget_workers,
    ) -> None:
        """Close an epoch's task streams; then its pools and virtual workers, or release the
        persistent ones. (The helpers are bound at definition, as in :meth:`_release_persistent`.)"""
        for g in gens:
            g.close()  # type: ignore[attr-defined]
        if not persistent:
            _close(pools)
            _forget(key)
        else:
            self._release_persistent()

    def _worker_key(self, ep: _Epoch, persistent: bool) -> str:
        # Persistent workers keep their RNG stream and init across epochs, as DataLoader's do.
        return f"{self._uid}-p" if persistent else f"{self._uid}-{ep.epoch}-{uuid.uuid4().hex[:8]}"

    def _draw_base_seed(self, ep: _Epoch, gen: torch.Generator | None, *, per_epoch_gen: bool = False) -> int:
        """The workers' base seed, drawn as DataLoader draws it when it creates an iterator: every
        epoch, or only the first time with persistent workers (they keep their seeds and RNG streams).

        On a resume the seed comes from the state, but a generator is still advanced by the same draw,
        so the permutation drawn after it is the same as in the interrupted run."""
        if ep.base_seed is not None:  # resumed epoch
            if ep.base_seed_drawn and gen is not None:
                _draw_seed(gen)
            if self.persistent_workers and self._persistent_seed is None:
                self._persistent_seed = ep.base_seed
            return ep.base_seed
        if self.persistent_workers and self._persistent_seed is not None and not per_epoch_gen:
            ep.base_seed, ep.base_seed_drawn = self._persistent_seed, False
        else:
            ep.base_seed, ep.base_seed_drawn = _draw_seed(gen), True
            if self.persistent_workers and self._persistent_seed is None:
                self._persistent_seed = ep.base_seed
        return ep.base_seed

    # ------------------------------------------------------------------ map-style

    def _epoch_sampler(self, ep: _Epoch) -> Any:
        """The epoch's sampler, with DataLoader's draws in DataLoader's order: the workers' base seed
        first, then (lazily, in the sampler) the permutation."""
        rank, world = self._rank_world()
        seed = self._shared_seed(world)  # every rank / outer worker must draw the same permutation
        if seed is not None and self.generator is None:
            g = torch.Generator()
            g.manual_seed(epoch_seed(seed, ep.epoch, rank))  # ranks augment differently...
            self._draw_base_seed(ep, g, per_epoch_gen=True)
            g.manual_seed(epoch_seed(seed, ep.epoch))  # ...but draw the same permutation
            return RandomSampler(self.dataset, generator=g) if self._default_random else self.sampler
        self._draw_base_seed(ep, self.generator)
        if self._default_random and self.generator is None:
            if ep.sampler_seed is None:
                ep.sampler_seed = _draw_seed(None)
            g = torch.Generator()
            g.manual_seed(ep.sampler_seed)
            return RandomSampler(self.dataset, generator=g)
        return self.sampler

    def _index_stream(self, ep: _Epoch) -> Iterator[Any]:
        """The epoch's index batches (or single indices without auto-collation) for this rank.

        A sampler or batch sampler the user gave draws from RNGs this loader does not seed: the
        states it starts from are recorded with the epoch (``sampler_rng``) and replayed on resume,
        and so are the samplers' own epochs (``DistributedSampler.set_epoch``)."""
        sampler = self._epoch_sampler(ep)
        if not self._user_sampler:
            return self._indices(sampler)
        samplers = self._samplers()
        if ep.sampler_epochs is None:
            ep.sampler_epochs = [_sampler_epoch(s) for s in samplers]
        else:  # a resumed epoch: its samplers draw as they did
            for s, epoch in zip(samplers, ep.sampler_epochs, strict=False):
                if epoch is not None and hasattr(s, "set_epoch"):
                    s.set_epoch(epoch)
        gens = sampler_generators(*samplers)
        stateful = stateful_samplers(*samplers)
        if ep.sampler_rng is not None:  # a resumed epoch
            return replay_first(lambda: self._indices(sampler), ep.sampler_rng, gens, stateful)

        def record(state: dict[str, Any]) -> None:
            ep.sampler_rng = state

        return record_first(lambda: self._indices(sampler), gens, record, stateful)

    def _indices(self, sampler: Any) -> Iterator[Any]:
        rank, world = self._rank_world()
        if world > 1:
            order = list(iter(sampler))
            sizes = rank_batch_sizes(len(order), world, self.batch_size or 1, self.drop_last)
            start = sum(sum(s) for s in sizes[:rank])

            def cut() -> Iterator[Any]:
                pos = start
                for size in sizes[rank]:
                    if self._auto_collation:
                        yield order[pos : pos + size]
                    else:
                        yield order[pos]
                    pos += size

            return cut()
        if not self._auto_collation:
            return iter(sampler)
        if self.batch_sampler is not None and (sampler is self.sampler or self._user_sampler):
            return iter(self.batch_sampler)
        return iter(BatchSampler(sampler, self.batch_size, self.drop_last))  # type: ignore[arg-type]

    def _iter_map(self, ep: _Epoch) -> Iterator[Any]:
        stream = self._index_stream(ep)
        if ep.skip:
            stream = itertools.islice(stream, ep.skip, None)  # resume: indices only, nothing fetched
        outer = self._outer_worker()
        if outer is not None:
            stream = itertools.islice(stream, outer[0], None, outer[1])
        processes = self._processes()
        return self._fetch_map(ep, stream, processes)

    def _fetch_map(self, ep: _Epoch, stream: Iterator[Any], processes: int) -> Iterator[Any]:
        # A batch whose fetch raises becomes a CaughtError (see _LoaderIterator): the epoch goes on.
        name = f"{type(self.dataset).__name__}.fetch"
        gather = batched_fetch(self.dataset, self.collate_fn) if self._auto_collation else None
        if gather is not None and (self.worker_init_fn is None or processes == 0):
            # A vectorised gather from memory costs microseconds a batch, less than handing a batch
            # over from a worker: it runs here whatever num_workers is (same batches, no processes).
            fetch: Callable[[Any], Any] = gather
        elif processes == 0:
            fetch = functools.partial(_fetch_samples, self.dataset, self._auto_collation, self.collate_fn)
        else:
            yield from self._fetch_map_in_workers(ep, stream, processes, name)
            return
        for index in stream:
            try:
                batch = fetch(index)
            except Exception as exc:
                batch = CaughtError.of(exc, name)
            yield batch

    def _fetch_map_in_workers(self, ep: _Epoch, stream: Iterator[Any], processes: int, name: str) -> Iterator[Any]:
        ctx = self._ctx(processes)
        pools, persistent = self._get_pools(processes, processes, ctx)
        key = self._worker_key(ep, persistent)
        splitter = RoundRobinSplitter(stream, processes)
        dataset = self._dataset_ref()
        gens: list[Iterator[Any]] = []
        try:
            for v, pool in enumerate(pools):
                spec = _WorkerSpec(f"{key}-{v}", v, processes, ep.base_seed or 0, self.worker_init_fn, os.getpid())
                fn = functools.partial(_fetch_in_worker, spec, dataset, self._auto_collation, self.collate_fn, name)
                gens.append(pool.imap(fn, splitter.stream(v), name=name, start=True))
            # Batch n comes from worker n % k; when one worker has nothing left, no later batch exists.
            for n in itertools.count():
                try:
                    batch = next(gens[n % processes])
                except StopIteration:
                    return
                yield batch
        finally:
            self._end_worker_epoch(gens, pools, persistent, key)

    # ------------------------------------------------------------------ IterableDataset

    def _iter_iterable(self, ep: _Epoch) -> Iterator[Any]:
        self._draw_base_seed(ep, self.generator)
        outer = self._outer_worker()
        if outer is not None:
            # Inside a DataLoader worker: the replica runs here as if num_workers=0 (the dataset does not
            # see the outer worker info, so it does not shard itself) and we keep every k-th batch.
            return itertools.islice(self._iter_inline_replica(), ep.skip + outer[0], None, outer[1])
        batches = self._iter_replicas(ep) if ep.layout > 0 else self._iter_inline_replica()
        if ep.skip:
            batches = _drop(batches, ep.skip)
        return batches

    def _iter_inline_replica(self) -> Iterator[Any]:
        state = _IterState(None)
        with _no_worker_info():
            state = _IterState(iter(self.dataset))
        while True:
            with _no_worker_info():
                try:
                    batch = _next_iterable_batch(state, self.batch_size, self.drop_last, self.collate_fn)
                except StopIteration:
                    return
            yield batch

    def _iter_replicas(self, ep: _Epoch) -> Iterator[Any]:
        workers = ep.layout  # the epoch's worker count fixes its batches, even after a resume
        processes = self.num_workers
        ctx = self._ctx(processes)
        pools, persistent = self._get_pools(workers, processes, ctx)
        key = self._worker_key(ep, persistent)
        epoch_key = uuid.uuid4().hex
        dataset = self._dataset_ref()
        gens: list[Iterator[Any]] = []
        try:
            for v, pool in enumerate(pools):
                spec = _WorkerSpec(f"{key}-{v}", v, workers, ep.base_seed or 0, self.worker_init_fn, os.getpid())
                fn = functools.partial(
                    _iterable_task, spec, epoch_key, dataset, self.batch_size, self.drop_last, self.collate_fn
                )
                name = f"{type(self.dataset).__name__}.__iter__"
                gens.append(pool.imap(fn, itertools.count(), name=name, start=True))
            active = list(range(workers))
            # Round-robin over workers, skipping exhausted ones: DataLoader's in-order interleaving.
            while active:
                for v in list(active):
                    result = next(gens[v])
                    if isinstance(result, _ShardEnd):
                        active.remove(v)
                        gens[v].close()  # type: ignore[attr-defined]
                        continue
                    yield result
        finally:
            self._end_worker_epoch(gens, pools, persistent, key)

    # ------------------------------------------------------------------ torchray Dataset

    def _arrow_seed(self, ep: _Epoch, world: int) -> int:
        """The epoch's shuffle seed: from ``seed`` and the epoch; else drawn from ``generator`` (or
        torch's global RNG), kept in the state so a resume reuses it."""
        shared = self._shared_seed(world)
        if shared is not None:
            ep.arrow_seed = epoch_seed(shared, ep.epoch)  # the same on every rank / outer worker
        elif ep.arrow_seed is None:
            ep.arrow_seed = _draw_seed(self.generator) & ((1 << 63) - 1)
        elif self.generator is not None:
            _draw_seed(self.generator)  # resumed: advance the generator as the interrupted run did
        return ep.arrow_seed

    def _plan_seed(self, ep: _Epoch, world: int) -> int:
        """The epoch's seed for the pipeline's random operators given no seed (``random_shuffle()``):
        agreed by every rank as the shuffle seed is; else a draw from a copy of the generator's
        epoch state (the generator itself is not advanced) or new entropy; kept in the state."""
        shared = self._shared_seed(world)
        if shared is not None:
            ep.plan_seed = epoch_seed(shared, ep.epoch, 1)
        elif ep.plan_seed is None:
            if ep.gen_state is not None:
                g = torch.Generator()
                g.set_state(ep.gen_state)
                ep.plan_seed = epoch_seed(_draw_seed(g), ep.epoch, 1)
            else:
                ep.plan_seed = int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
        return ep.plan_seed

    def _shardable(self, processes: int, plan_seed: int) -> tuple[list[Any], list[int], Callable[..., LogicalOp]]:
        ds: Dataset = self.dataset
        units = _row_units(ds._plan)
        if units is None:
            # Row counts per source unit are unknown before running (filters, shuffles...): run the
            # pipeline once and keep its blocks (spilled past the memory budget) for every epoch; once
            # per epoch where random operators without a seed make each epoch's rows differ.
            key = plan_seed if _has_unseeded_all_to_all(ds._plan) else None
            if self._materialized is None or key != self._materialized_seed:
                ctx = self._ctx(processes)
                ctx.unseeded_random_seed = plan_seed
                store = _new_block_store()
                for block in ds.iter_internal_blocks(ctx):
                    store.append(block)
                self._materialized = MaterializedDataset(InputBlocks(store, "Materialized"))
                self._materialized_seed = key
            units = _row_units(self._materialized._plan)
            assert units is not None
        return units

    def _iter_arrow(self, ep: _Epoch, feeder: DeviceFeeder) -> Iterator[Any]:
        ds: Dataset = self.dataset
        rank, world = self._rank_world()
        outer = self._outer_worker()
        processes = self._processes()
        seed = self._arrow_seed(ep, world) if self.shuffle else None
        plan_seed = self._plan_seed(ep, world)
        sizes: list[int] | None = None
        if world > 1 or outer is not None:
            units, counts, rebuild = self._shardable(processes, plan_seed)
            total = sum(counts)
            order = list(range(len(units)))
            if seed is not None:
                order = [int(i) for i in np.random.default_rng(seed).permutation(len(units))]
            B = self.batch_size or 1
            if world > 1:
                all_sizes = rank_batch_sizes(total, world, B, self.drop_last)
                lo = sum(sum(s) for s in all_sizes[:rank])
                sizes = all_sizes[rank]
            else:
                n_batches = total // B if self.drop_last else math.ceil(total / B)
                sizes = [min(B, total - i * B) for i in range(n_batches)]
                lo = 0
            if outer is not None:  # a DataLoader worker takes a contiguous run of this part's batches
                a, b = split_ranges(len(sizes), outer[1])[outer[0]]
                lo += sum(sizes[:a])
                sizes = sizes[a:b]
            hi = lo + sum(sizes)
            part = rank * (outer[1] if outer else 1) + (outer[0] if outer else 0)
            ds = Dataset(rebuild(_pieces(counts, order, lo, hi)))
            local_seed = None if seed is None else epoch_seed(seed, part)
        else:
            if seed is not None:
                ds = ds.randomize_block_order(seed=seed)
            local_seed = seed
        self._last_dataset = ds
        ctx = self._ctx(processes)
        ctx.unseeded_random_seed = plan_seed
        prefetch = 0 if processes == 0 else (self.prefetch_factor or 2) * processes
        buffer = None
        if self.shuffle:
            buffer = self.shuffle_buffer_size or max(1024, 8 * (self.batch_size or 1))
        natural = sizes is None or all(s == self.batch_size for s in sizes[:-1])
        if natural:
            device, pin_memory = self._feeder_args
            return ds.iter_torch_batches(
                prefetch_batches=prefetch, batch_size=self.batch_size, device=device, pin_memory=pin_memory,
                collate_fn=self.collate_fn,
                drop_last=self.drop_last, local_shuffle_buffer_size=buffer, local_shuffle_seed=local_seed,
                _skip_batches=ep.skip, _ctx=ctx,
            )
        # Equal batch counts across ranks need some short batches before the last: re-cut rows.
        assert sizes is not None
        numpy_batches = ds.iter_batches(
            prefetch_batches=prefetch, batch_size=self.batch_size, batch_format="numpy", drop_last=False,
            local_shuffle_buffer_size=buffer, local_shuffle_seed=local_seed, _ctx=ctx,
        )
        recut_batches = self._convert_recut(recut(numpy_batches, sizes), ep.skip)
        return feeder.feed(recut_batches) if feeder.active else recut_batches

    def _convert_recut(self, batches: Iterator[dict[str, np.ndarray]], skip: int) -> Iterator[Any]:
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            if self.collate_fn is not None:
                yield self.collate_fn(batch)
            else:
                yield {k: numpy_to_torch_value(v, None, copy=True) for k, v in batch.items()}


def _drop(it: Iterator[Any], n: int) -> Iterator[Any]:
    try:
        for i, item in enumerate(it):
            if i >= n:
                yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# Keep the names DataLoader users look for importable from here too.
_ = (Iterable, SequentialSampler, default_collate, default_convert)
