"""The Ray Data bridge: run a torchray pipeline on Ray, bring Ray data back, feed Ray data to
``RayStyleLoader``.

* :func:`to_ray` translates the *logical plan* of a :class:`~torchray_loader.Dataset`, operator by
  operator, into the equivalent ``ray.data`` calls: reads become a ``ray.data.Datasource`` whose Ray
  read tasks run this package's own ``ReadTask`` callables (so every ``read_*`` works on Ray without
  per-format code); ``map`` / ``map_batches`` / ``flat_map`` / ``filter`` / column ops become the
  same Ray methods with the same functions, arguments and compute strategies; ``limit``, ``union``,
  ``random_shuffle``, ``randomize_block_order`` and ``repartition`` map one to one. Nothing is
  executed locally: only in-memory sources (``from_items``, ``materialize()``...) ship their blocks
  to Ray's object store.
* :func:`from_ray` goes the other way: a local Dataset whose blocks are fetched from Ray one at a
  time as the local pipeline consumes them.
* :func:`is_ray_dataset` / :func:`ray_iterable_to_batches` let ``RayStyleLoader`` take a
  ``ray.data.Dataset`` or ``ray.data.DataIterator`` (what ``ray.train.get_dataset_shard`` returns).

Column types cross the border in both directions: Arrow's canonical ``fixed_shape_tensor`` and this
package's ``torchray.variable_shape_tensor`` / ``torchray.python_object`` become Ray's tensor and
pickled-object extension types (and back), so tensor columns arrive as ndarrays on either side.

``import ray`` happens only inside these functions. Without Ray installed they raise an
``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..blocks import column_from_values, column_to_numpy
from ..blocks.tensors import PythonObjectType, VariableShapeTensorType
from ..context import DataContext
from ..dataset import Dataset
from ..execution.pool import shared_objects
from ..io.read_task import ReadTask
from ..plan.compute import ActorPoolStrategy, ComputeStrategy, TaskPoolStrategy
from ..plan.operators import AllToAll, InputBlocks, Limit, LogicalOp, MapStage, Read, Union
from ..plan.transforms import (
    AddColumn,
    BlockTransform,
    DropColumns,
    Filter,
    FlatMap,
    MapBatches,
    MapRows,
    RenameColumns,
    SelectColumns,
    run_chain,
)

__all__ = [
    "RAY_EXTRA_HINT",
    "from_ray",
    "from_ray_block",
    "is_ray_dataset",
    "ray_iterable_to_batches",
    "to_ray",
    "to_ray_block",
]

#: How to get Ray; every ImportError raised here says it.
RAY_EXTRA_HINT = "pip install 'torchray_loader[ray]'"

#: Rows in the local shuffle buffer when ``shuffle=True`` and no ``local_shuffle_buffer_size`` is given
#: (at least ``batch_size``, which Ray requires).
DEFAULT_SHUFFLE_BUFFER_ROWS = 4096

_OUR_EXTENSION_TYPES = (pa.FixedShapeTensorType, VariableShapeTensorType, PythonObjectType)


def _import_ray(feature: str) -> Any:
    """``import ray`` (and ``ray.data``), or an ImportError naming the ``ray`` extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate import
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs Ray, which is not installed. Install the 'ray' extra: {RAY_EXTRA_HINT}"
        ) from exc
    return ray


# ------------------------------------------------------------------------------------- detection


def _ray_class_names(obj: Any) -> set[str]:
    """``Dataset``/``DataIterator`` when ``obj``'s class derives from Ray Data's (no ``import ray``)."""
    names = set()
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if (module == "ray.data" or module.startswith("ray.data.")) and cls.__name__ in ("Dataset", "DataIterator"):
            names.add(cls.__name__)
    return names


def is_ray_dataset(obj: Any) -> bool:
    """True for a ``ray.data.Dataset`` (materialized or not) and a ``ray.data.DataIterator`` (what
    ``ray.train.get_dataset_shard`` and ``Dataset.streaming_split`` return).

    Decided from the class hierarchy, without importing Ray, so it is cheap and safe to call on
    anything.

    Example:
        >>> import torchray_loader as rd
        >>> is_ray_dataset(rd.range(3)), is_ray_dataset([1, 2])
        (False, False)
    """
    return bool(_ray_class_names(obj))


# ------------------------------------------------------------------------------- block conversion


def to_ray_block(block: pa.Table) -> pa.Table:
    """A block with this package's tensor/object column types replaced by Ray's.

    Fixed-shape and ragged tensor columns become Ray's tensor extension types, Python-object
    columns Ray's pickled-object type; other columns are untouched (no copy). Needs Ray.

    Example:
        >>> import numpy as np, pyarrow as pa
        >>> from torchray_loader.blocks import block_from_batch
        >>> block = block_from_batch({"x": np.zeros((2, 3), np.float32)})
        >>> to_ray_block(block).column("x").type.extension_name  # doctest: +SKIP
        'ray.data.arrow_tensor_v2'
    """
    names = [f.name for f in block.schema if isinstance(f.type, _OUR_EXTENSION_TYPES)]
    if not names:
        return block
    from ray.data.extensions import ArrowPythonObjectArray, ArrowTensorArray

    for name in names:
        index = block.schema.get_field_index(name)
        col = block.column(index)
        values = column_to_numpy(col)
        if isinstance(col.type, PythonObjectType):
            array = ArrowPythonObjectArray.from_objects(values)
        elif len(values) == 0:
            continue  # nothing to infer a Ray tensor type from; such blocks are dropped anyway
        else:
            array = ArrowTensorArray.from_numpy(values, column_name=name)
        block = block.set_column(index, name, array)
    return block


def from_ray_block(block: Any) -> pa.Table:
    """A Ray block (Arrow table or pandas DataFrame) as a block of this package.

    Ray's tensor extension columns become Arrow's canonical fixed-shape tensor (or this package's
    ragged tensor) columns, pickled objects this package's object columns. Needs Ray.

    Example:
        >>> import pyarrow as pa
        >>> from_ray_block(pa.table({"a": [1, 2]})).column("a").to_pylist()  # doctest: +SKIP
        [1, 2]
    """
    from ray.data.block import BlockAccessor

    if not isinstance(block, pa.Table):
        block = BlockAccessor.for_block(block).to_arrow()
    accessor = BlockAccessor.for_block(block)
    out = block
    for index, field in enumerate(block.schema):
        t = field.type
        if isinstance(t, pa.ExtensionType) and not isinstance(t, _OUR_EXTENSION_TYPES):
            values = accessor.to_numpy(field.name)
            out = out.set_column(index, field.name, column_from_values(values))
    return out


# ------------------------------------------------------------------------------------ read tasks


def _read_for_ray(ctx: DataContext, shared: Mapping[str, Any], task: ReadTask) -> Iterator[pa.Table]:
    """Body of one Ray read task: run this package's ReadTask under the driver's DataContext (with
    its Read's shared objects, which travel with each Ray task)."""
    DataContext._set_current(ctx)
    with shared_objects(shared):
        for block in task():
            if block.num_rows:
                yield to_ray_block(block)


@functools.cache
def _datasource_class() -> type:
    """``TorchrayDatasource``, a ``ray.data.Datasource`` (built on first use: Ray loads lazily)."""
    from ray.data import Datasource
    from ray.data.block import BlockMetadata
    from ray.data.datasource import ReadTask as RayReadTask

    ray_task_params = inspect.signature(RayReadTask.__init__).parameters

    def metadata(task: ReadTask) -> Any:
        kwargs: dict[str, Any] = dict(
            num_rows=None if task.num_rows is None else int(task.num_rows),
            size_bytes=None if task.size_bytes is None else int(task.size_bytes),
            input_files=list(task.paths) or None,
            exec_stats=None,
        )
        try:
            return BlockMetadata(**kwargs)
        except TypeError:  # Ray < 2.44 also has a schema field
            return BlockMetadata(schema=None, **kwargs)  # type: ignore[call-arg]

    class TorchrayDatasource(Datasource):
        """This package's read tasks as a Ray datasource: one Ray read task per ``ReadTask``."""

        def __init__(
            self, tasks: Sequence[ReadTask], name: str, ctx: DataContext, shared: Mapping[str, Any]
        ) -> None:
            super().__init__()
            self._tasks = tuple(tasks)
            self._shared = shared
            self._name = name
            self._ctx = ctx

        def get_name(self) -> str:
            # Ray prefixes "Read": ReadParquet stays ReadParquet in Ray's stats.
            return self._name[4:] if self._name.startswith("Read") and len(self._name) > 4 else self._name

        def estimate_inmemory_data_size(self) -> int | None:
            sizes = [t.size_bytes for t in self._tasks]
            return None if any(s is None for s in sizes) else int(sum(sizes))  # type: ignore[arg-type]

        def get_read_tasks(  # type: ignore[override]  # Ray's signature grew keywords over releases
            self, parallelism: int, per_task_row_limit: int | None = None, **kwargs: Any
        ) -> list[Any]:
            # One Ray task per ReadTask whatever the parallelism: the tasks are this package's units
            # of reading (a file or a file part), and the order of rows follows them.
            extra = {}
            if per_task_row_limit is not None and "per_task_row_limit" in ray_task_params:
                extra["per_task_row_limit"] = per_task_row_limit
            return [
                RayReadTask(functools.partial(_read_for_ray, self._ctx, self._shared, task), metadata(task), **extra)
                for task in self._tasks
            ]

    return TorchrayDatasource


# --------------------------------------------------------------------------- generic transforms


def _run_transforms(ctx: DataContext, transforms: tuple[BlockTransform, ...], table: Any) -> Iterator[pa.Table]:
    """Run this package's transforms on one Ray batch (a pyarrow table): the fallback for
    transforms that have no Ray method of their own."""
    DataContext._set_current(ctx)
    out: pa.Table
    for out in run_chain(transforms, [from_ray_block(table)]):
        if out.num_rows:
            yield to_ray_block(out)


class _TransformActor:
    """:func:`_run_transforms` as a callable class, for actor-pool stages (callable classes inside
    the transforms are then constructed once per Ray actor)."""

    def __init__(self, ctx: DataContext, transforms: tuple[BlockTransform, ...]) -> None:
        self._ctx = ctx
        self._transforms = transforms

    def __call__(self, table: Any) -> Iterator[pa.Table]:
        yield from _run_transforms(self._ctx, self._transforms, table)


# ----------------------------------------------------------------------------------- to_ray


class _ToRay:
    """Translates a logical plan into ``ray.data`` calls, bottom-up; shared sub-plans once."""

    def __init__(self, ray: Any, ctx: DataContext) -> None:
        self.ray = ray
        self.rd = ray.data
        self.ctx = ctx
        self.memo: dict[int, Any] = {}

    def convert(self, op: LogicalOp) -> Any:
        key = id(op)
        if key not in self.memo:
            self.memo[key] = self._convert(op)
        return self.memo[key]

    def _empty(self) -> Any:
        return self.rd.from_items([])

    def _convert(self, op: LogicalOp) -> Any:
        if isinstance(op, Read):
            if not op.tasks:
                return self._empty()
            source = _datasource_class()(op.tasks, op.name, self.ctx, op.shared)
            return self.rd.read_datasource(source, override_num_blocks=len(op.tasks))
        if isinstance(op, InputBlocks):
            return self._input_blocks(op)
        if isinstance(op, MapStage):
            ds = self.convert(op.input)
            for transform in op.transforms:
                ds = self._apply(ds, transform, op.compute)
            return ds
        if isinstance(op, Limit):
            return self.convert(op.input).limit(op.n)
        if isinstance(op, Union):
            first, *rest = [self.convert(child) for child in op.union_inputs]
            return first.union(*rest) if rest else first
        if isinstance(op, AllToAll):
            return self._all_to_all(op)
        raise NotImplementedError(f"to_ray: no Ray equivalent for the operator {type(op).__name__} ({op.name})")

    def _input_blocks(self, op: InputBlocks) -> Any:
        # Put blocks one at a time (a spilled block store never sits in memory whole).
        refs = []
        for i in range(len(op.blocks)):
            block = op.blocks[i]
            if block.num_rows:
                refs.append(self.ray.put(to_ray_block(block)))
        return self.rd.from_arrow_refs(refs) if refs else self._empty()

    # --------------------------------------------------------------- maps

    def _compute_kwargs(self, compute: ComputeStrategy, is_class: bool) -> dict[str, Any]:
        task_pool = getattr(self.rd, "TaskPoolStrategy", None)
        if isinstance(compute, ActorPoolStrategy):
            if is_class:
                return {"compute": self.rd.ActorPoolStrategy(min_size=compute.min_size or 1, max_size=compute.max_size)}
            size = compute.max_size  # Ray runs plain functions as tasks only; keep the bound.
        else:
            size = compute.size
        if size is None:
            return {}
        return {"compute": task_pool(size=size)} if task_pool is not None else {"concurrency": size}

    def _udf_kwargs(self, t: Any, compute: ComputeStrategy) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if t.fn_args:
            kwargs["fn_args"] = tuple(t.fn_args)
        if t.fn_kwargs:
            kwargs["fn_kwargs"] = dict(t.fn_kwargs)
        if t.is_class:
            if t.fn_constructor_args:
                kwargs["fn_constructor_args"] = tuple(t.fn_constructor_args)
            if t.fn_constructor_kwargs:
                kwargs["fn_constructor_kwargs"] = dict(t.fn_constructor_kwargs)
        kwargs.update(self._compute_kwargs(compute, t.is_class))
        return kwargs

    def _apply(self, ds: Any, t: BlockTransform, compute: ComputeStrategy) -> Any:
        if isinstance(t, SelectColumns):
            return ds.select_columns(list(t.cols))
        if isinstance(t, DropColumns):
            return ds.drop_columns(list(t.cols))
        if isinstance(t, RenameColumns):
            return ds.rename_columns(dict(t.mapping))
        if isinstance(t, MapBatches):
            return ds.map_batches(t.fn, batch_size=t.batch_size, batch_format=t.batch_format, **self._udf_kwargs(t, compute))
        if isinstance(t, MapRows):
            return ds.map(t.fn, **self._udf_kwargs(t, compute))
        if isinstance(t, FlatMap):
            return ds.flat_map(t.fn, **self._udf_kwargs(t, compute))
        if isinstance(t, Filter):
            return ds.filter(t.fn, **self._udf_kwargs(t, compute))
        if isinstance(t, AddColumn):
            size = compute.size if isinstance(compute, TaskPoolStrategy) else None
            extra = {"concurrency": size} if size is not None else {}
            return ds.add_column(t.col, t.fn, batch_format=t.batch_format, **extra)
        return self._apply_generic(ds, t, compute)

    def _apply_generic(self, ds: Any, t: BlockTransform, compute: ComputeStrategy) -> Any:
        """A transform without a Ray method: run it on Ray as it runs here, block by block."""
        common = dict(batch_format="pyarrow", batch_size=None)
        if isinstance(compute, ActorPoolStrategy):
            return ds.map_batches(
                _TransformActor, fn_constructor_args=(self.ctx, (t,)), **common,
                **self._compute_kwargs(compute, is_class=True),
            )
        return ds.map_batches(
            functools.partial(_run_transforms, self.ctx, (t,)), **common, **self._compute_kwargs(compute, is_class=False)
        )

    # --------------------------------------------------------------- all-to-all

    def _all_to_all(self, op: AllToAll) -> Any:
        ds = self.convert(op.input)
        if op.name == "RandomShuffle":
            return ds.random_shuffle(seed=op.seed)
        if op.name == "RandomizeBlockOrder":
            return ds.randomize_block_order(seed=op.seed)
        if op.name == "Repartition":
            fn = op.fn
            if isinstance(fn, functools.partial) and fn.args and isinstance(fn.args[0], int):
                return ds.repartition(fn.args[0])
        if op.name == "StreamingSplit":
            raise NotImplementedError(
                "to_ray: a streaming_split shard has no Ray equivalent; convert the whole dataset with "
                "to_ray() and split on Ray (ray_ds.streaming_split(n), or Ray Train's get_dataset_shard)"
            )
        raise NotImplementedError(f"to_ray: no Ray equivalent for the all-to-all operator {op.name!r}")


def to_ray(dataset: Dataset, *, preserve_order: bool | None = None) -> Any:
    """The same pipeline as a lazy ``ray.data.Dataset``, built from ``dataset``'s logical plan.

    Reads run this package's read tasks inside Ray read tasks; maps, ``map_batches`` (with their
    batch size, batch format, constructor arguments and compute strategy), filters, column ops,
    limits, unions, shuffles and repartitions become the same ``ray.data`` calls. Nothing runs
    until the Ray dataset is consumed. In-memory sources (``from_items``, ``materialize()``...) are
    put into Ray's object store.

    ``preserve_order``: ``None`` keeps Ray's setting (by default Ray may reorder blocks for
    throughput); ``True`` makes Ray deliver blocks in plan order, as this package does.
    ``random_shuffle(seed=)`` gives a reproducible permutation on Ray too, but not the same one.

    Needs a Ray runtime (``ray.init()`` or an address); raises ImportError without the ``ray`` extra.

    Example:
        >>> import torchray_loader as rd
        >>> ds = rd.range(10).map(lambda r: {"id": r["id"] * 2}).filter(lambda r: r["id"] > 4)
        >>> ray_ds = ds.to_ray()  # doctest: +SKIP
        >>> sorted(r["id"] for r in ray_ds.take_all())  # doctest: +SKIP
        [6, 8, 10, 12, 14, 16, 18]
    """
    ray = _import_ray("Dataset.to_ray()")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"to_ray expects a torchray_loader Dataset, got {type(dataset).__name__}")
    if preserve_order is not None and not isinstance(preserve_order, bool):
        raise TypeError(f"preserve_order must be a bool or None, got {preserve_order!r}")
    with warnings.catch_warnings():
        # Ray nudges filter(fn) users towards expressions; a translated filter has only a function.
        warnings.filterwarnings("ignore", message=".*'expr' instead of 'fn'.*", category=UserWarning)
        out = _ToRay(ray, DataContext.get_current().copy()).convert(dataset._plan)
    if preserve_order is not None:
        # The context belongs to this Ray dataset (sources copy Ray's global one), not to Ray globally.
        out.context.execution_options.preserve_order = preserve_order
    return out


# ----------------------------------------------------------------------------------- from_ray


class RayBlocks(Sequence):
    """The blocks of a Ray dataset, fetched one at a time (the ``blocks`` of a ``FromRay`` source).

    On first use Ray executes the dataset into its object store (which spills to disk, and is
    skipped when the dataset is already materialized); ``blocks[i]`` then fetches and converts one
    block. Nothing is cached here, so this process holds only the blocks being consumed.
    """

    def __init__(self, ray_dataset: Any) -> None:
        self._dataset = ray_dataset
        self._refs: list[Any] | None = None
        self._lock = threading.Lock()

    def refs(self) -> list[Any]:
        """Object refs of the dataset's Arrow blocks, in order (executes the Ray dataset once)."""
        with self._lock:
            if self._refs is None:
                self._refs = list(self._dataset.to_arrow_refs())
            return self._refs

    def __len__(self) -> int:
        return len(self.refs())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        import ray

        return from_ray_block(ray.get(self.refs()[index]))

    def __iter__(self) -> Iterator[pa.Table]:
        for i in range(len(self)):
            yield self[i]


def from_ray(ray_dataset: Any) -> Dataset:
    """A local Dataset over the rows of a ``ray.data.Dataset``.

    Lazy: nothing runs until the local dataset is consumed. Then Ray executes its pipeline (on the
    cluster, into Ray's object store) and the blocks stream into this process one at a time as
    local transforms and iterators need them; Ray tensor and object columns become this package's
    column types. Needs a running Ray runtime.

    Example:
        >>> import ray, torchray_loader as rd  # doctest: +SKIP
        >>> rd.from_ray(ray.data.range(4)).map(lambda r: {"x": r["id"] + 1}).take_all()  # doctest: +SKIP
        [{'x': 1}, {'x': 2}, {'x': 3}, {'x': 4}]
    """
    _import_ray("from_ray()")
    names = _ray_class_names(ray_dataset)
    if "Dataset" not in names:
        hint = " (a DataIterator: pass the ray.data.Dataset itself)" if names else ""
        raise TypeError(f"from_ray expects a ray.data.Dataset, got {type(ray_dataset).__name__}{hint}")
    return Dataset(InputBlocks(RayBlocks(ray_dataset), "FromRay"))


# ------------------------------------------------------------------------- RayStyleLoader hook


def _epoch_seed(seed: int | None, epoch: int) -> int:
    """A seed for one epoch: a pure function of (seed, epoch), fresh entropy when seed is None."""
    entropy = [int(seed), int(epoch)] if seed is not None else None
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class _Collated:
    """A collated batch in transit through Ray's iterator. Ray's finalize step moves (and
    concatenates lists of) tensors it recognises; boxed, the batch keeps this package's structure."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _numpy_batch_to_torch(batch: dict[str, np.ndarray], dtypes: Any) -> dict[str, Any]:
    """A numpy batch as the local ``iter_torch_batches`` gives it: numeric columns as (writable)
    tensors, ragged tensors as lists of tensors, strings and objects as lists."""
    from ..pytorch.convert import numpy_to_torch_value

    out = {}
    for name, values in batch.items():
        dtype = dtypes if dtypes is None or not isinstance(dtypes, dict) else dtypes.get(name)
        out[name] = numpy_to_torch_value(np.asarray(values), dtype, copy=False)
    return out


@functools.cache
def _collate_class() -> type:
    """A collate class for Ray's ``iter_torch_batches`` (a ``NumpyBatchCollateFn`` where Ray has one)."""
    base: type
    try:
        from ray.data.collate_fn import NumpyBatchCollateFn

        base = NumpyBatchCollateFn
    except ImportError:  # Ray < 2.47 takes any callable
        base = object

    class TorchrayCollate(base):  # type: ignore[misc, valid-type]
        def __init__(self, collate_fn: Callable[[dict[str, np.ndarray]], Any] | None, dtypes: Any) -> None:
            self.collate_fn = collate_fn
            self.dtypes = dtypes

        def __call__(self, batch: dict[str, np.ndarray]) -> _Collated:  # type: ignore[override]
            if self.collate_fn is not None:
                # Writable arrays, as the local iterator hands to collate_fn.
                batch = {k: v if not isinstance(v, np.ndarray) or v.flags.writeable else v.copy() for k, v in batch.items()}
                return _Collated(self.collate_fn(batch))
            return _Collated(_numpy_batch_to_torch(batch, self.dtypes))

    return TorchrayCollate


def _with_plan_order(ray_dataset: Any) -> Any:
    """``ray_dataset`` delivering blocks in plan order, on a private copy of its ``DataContext``.

    Derived Ray datasets share their parent's context object, so the flag is set on a deep copy:
    the caller's dataset keeps its own setting. Ray versions without ``Dataset.copy(_deep_copy=)``
    get the dataset back unchanged (order then follows Ray's setting)."""
    try:
        ordered = type(ray_dataset).copy(ray_dataset, _deep_copy=True)
    except (AttributeError, TypeError):  # pragma: no cover - older or newer Ray without it
        return ray_dataset
    ordered.context.execution_options.preserve_order = True
    return ordered


def _unbox(batches: Any) -> Iterator[Any]:
    for batch in batches:
        yield batch.value if isinstance(batch, _Collated) else batch


def _resolve_auto_device(device: Any) -> Any:
    """``"auto"``: the Ray Train worker's device inside Ray Train, else stay on the CPU."""
    if not (isinstance(device, str) and device == "auto"):
        return device
    try:
        from ray.train.torch import get_device
        from ray.train.utils import _in_ray_train_worker
    except ImportError:  # pragma: no cover - Ray Train missing or moved
        return None
    return get_device() if _in_ray_train_worker() else None


def ray_iterable_to_batches(
    obj: Any,
    *,
    batch_size: int | None = 256,
    shuffle: bool = False,
    seed: int | None = None,
    epoch: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
    dtypes: Any = None,
    device: Any = None,
    prefetch_batches: int = 1,
    local_shuffle_buffer_size: int | None = None,
    skip_batches: int = 0,
) -> Iterator[Any]:
    """One epoch of torch batches from a ``ray.data.Dataset`` or ``ray.data.DataIterator``, with
    ``RayStyleLoader``'s semantics for Arrow data (Ray's ``iter_torch_batches`` underneath).

    Batches have the local structure: a dict of tensors, with ragged tensors as lists of tensors
    and strings/objects as lists (where Ray alone would raise); ``dtypes`` casts (one dtype or a
    dict of column -> dtype). ``shuffle=True`` is this package's Arrow-input shuffle: a seeded
    block-order shuffle (on a Dataset; a DataIterator shard streams in the order Ray gives it) plus
    a local shuffle buffer of ``local_shuffle_buffer_size`` rows (default
    :data:`DEFAULT_SHUFFLE_BUFFER_ROWS`, never fewer than ``batch_size``), reseeded from
    ``(seed, epoch)`` each epoch. ``collate_fn`` gets a dict of numpy arrays (Ray semantics) and
    cannot be combined with ``dtypes``. ``device``: ``None`` keeps batches on the CPU; ``"auto"`` is
    the Ray Train worker's device inside Ray Train; anything else is a torch device to copy to.
    A ``ray.data.Dataset`` is iterated with Ray's ``preserve_order`` on (on a copy of its context),
    so a seed fixes the batch sequence. ``skip_batches`` drops the epoch's first batches (a resume
    point): exact for a Dataset; for a DataIterator shard only where Ray's order is deterministic
    (no streaming split reordering).

    Example:
        >>> import ray  # doctest: +SKIP
        >>> batches = ray_iterable_to_batches(ray.data.range(4), batch_size=2)  # doctest: +SKIP
        >>> [b["id"].tolist() for b in batches]  # doctest: +SKIP
        [[0, 1], [2, 3]]
    """
    _import_ray("RayStyleLoader over Ray data")
    from ..pytorch.convert import check_dtypes
    from ..pytorch.device import DeviceFeeder

    names = _ray_class_names(obj)
    if not names:
        raise TypeError(f"expected a ray.data.Dataset or ray.data.DataIterator, got {type(obj).__name__}")
    if collate_fn is not None and dtypes is not None:
        raise ValueError("collate_fn and dtypes cannot be combined for Ray data: cast inside collate_fn")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
    check_dtypes(dtypes)
    if local_shuffle_buffer_size is not None and (
        isinstance(local_shuffle_buffer_size, bool) or not isinstance(local_shuffle_buffer_size, int)
        or local_shuffle_buffer_size < 1
    ):
        raise ValueError(f"local_shuffle_buffer_size must be a positive int, got {local_shuffle_buffer_size!r}")
    buffer = local_shuffle_buffer_size
    shuffle_seed = None
    if "Dataset" in names:
        # A seed fixes the batch sequence and a resume point counts batches: both need Ray to
        # deliver blocks in plan order (by default it may reorder them for throughput).
        obj = _with_plan_order(obj)
    if shuffle:
        shuffle_seed = _epoch_seed(seed, epoch)
        if buffer is None:
            buffer = DEFAULT_SHUFFLE_BUFFER_ROWS
        if "Dataset" in names:
            obj = obj.randomize_block_order(seed=shuffle_seed)
    elif buffer is not None and seed is not None:
        shuffle_seed = _epoch_seed(seed, epoch)
    if buffer is not None:
        if batch_size is None:
            raise ValueError("shuffling Ray data needs a batch_size (the shuffle buffer is cut into batches)")
        buffer = max(buffer, batch_size)
    kwargs: dict[str, Any] = dict(
        batch_size=batch_size,
        drop_last=drop_last,
        prefetch_batches=prefetch_batches,
        collate_fn=_collate_class()(collate_fn, dtypes),
        device="cpu",  # batches are boxed: Ray moves nothing; the feeder below copies to `device`
    )
    if buffer is not None:
        kwargs["local_shuffle_buffer_size"] = buffer
        kwargs["local_shuffle_seed"] = shuffle_seed
    if isinstance(skip_batches, bool) or not isinstance(skip_batches, int) or skip_batches < 0:
        raise ValueError(f"skip_batches must be an int >= 0, got {skip_batches!r}")
    # A plain function (not a generator), so bad arguments raise here, not at the first batch.
    batches = _unbox(obj.iter_torch_batches(**kwargs))
    if skip_batches:
        batches = itertools.islice(batches, skip_batches, None)
    feeder = DeviceFeeder(_resolve_auto_device(device), pin_memory=False)
    return feeder.feed(batches) if feeder.active else batches
