"""Module-level datasets, collate functions and comparison helpers for the RayStyleLoader tests.

Everything here is importable by name (worker processes, ``spawn`` and the fresh processes of the
resume tests import this module), so nothing is a lambda or a closure.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

Sample = collections.namedtuple("Sample", ["x", "y"])


class TensorDS(Dataset):
    """Samples are float tensors of shape (3,)."""

    def __init__(self, n: int = 11) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.arange(3, dtype=torch.float32) + 10 * i


class TupleDS(TensorDS):
    """(uint8 image tensor, int label)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((2, 2), i, dtype=torch.uint8), i % 3


class DictDS(TensorDS):
    """Nested dicts with tensors, ints, floats, strings and a list."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.tensor([i, -i]), "meta": {"y": float(i) / 2, "name": f"s{i}"}, "pair": [i, i + 1]}


class NamedTupleDS(TensorDS):
    def __getitem__(self, i: int) -> Sample:
        return Sample(x=torch.tensor(i, dtype=torch.int16), y=np.float64(i) * 0.5)


class NumpyDS(TensorDS):
    def __getitem__(self, i: int) -> np.ndarray:
        return np.arange(4, dtype=np.int32).reshape(2, 2) * i


class StrDS(TensorDS):
    def __getitem__(self, i: int) -> str:
        return f"sample-{i}"


class PILDS(TensorDS):
    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        return Image.fromarray(np.full((4, 5, 3), i * 7 % 256, dtype=np.uint8))


class GetItemsDS(TensorDS):
    """Has ``__getitems__`` (batched fetch), whose results differ from ``__getitem__``'s on purpose."""

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i])

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return [torch.tensor([i, 1000]) for i in indices]


class RandomAugDS(TensorDS):
    """Uses the worker's RNGs (torch, numpy, random) and reports which worker fetched the sample."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        import random

        info = get_worker_info()
        return {
            "i": i,
            "torch": torch.rand(1),
            "numpy": np.random.rand(),
            "random": random.random(),
            "worker": -1 if info is None else info.id,
            "seed": -1 if info is None else info.seed % 1000,
            "init": _INIT_MARK.get("value", -1),
        }


class FailingDS(TensorDS):
    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 5:
            raise KeyError(f"no sample {i}")
        return torch.tensor(i)


class ShardedIterable(IterableDataset):
    """Yields range(n); shards by ``get_worker_info()``, unevenly (worker 0 gets the odd extra)."""

    def __init__(self, n: int = 13) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.n))
        per = math.ceil(self.n / info.num_workers)
        lo = info.id * per
        return iter(range(lo, min(self.n, lo + per)))

    def __len__(self) -> int:
        return self.n


class NaiveIterable(IterableDataset):
    """Ignores worker info: with k workers every sample comes k times (as with DataLoader)."""

    def __init__(self, n: int = 5) -> None:
        self.n = n

    def __iter__(self):
        return iter(torch.arange(self.n) * 2)


class TensorIterable(IterableDataset):
    """Dict samples, sharded round-robin by worker."""

    def __init__(self, n: int = 10) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        wid, k = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(wid, self.n, k):
            yield {"x": torch.tensor([i, i]), "w": wid}


_INIT_MARK: dict[str, int] = {}


def mark_init(worker_id: int) -> None:
    _INIT_MARK["value"] = 100 + worker_id


def collate_list(batch: list[Any]) -> list[Any]:
    return list(batch)


def collate_sum(batch: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(batch)).sum(0)


def collate_worker_id(batch: list[Any]) -> tuple[Any, int]:
    """``default_collate`` plus the id of the worker that collated (-1 in the main process)."""
    from torch.utils.data import default_collate

    info = get_worker_info()
    return default_collate(batch), -1 if info is None else info.id


def collate_pil(batch: list[Any]) -> list[tuple[tuple[int, int], str, bytes]]:
    return [(im.size, im.mode, im.tobytes()) for im in batch]


# ------------------------------------------------------------------------------ comparison


def assert_same(a: Any, b: Any, path: str = "batch") -> None:
    """Equal in value, type, dtype, shape and nesting (namedtuple type and dict key order included)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.equal(a, b), f"{path}: values differ\n{a}\n{b}"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert np.array_equal(a, b), f"{path}: values differ"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: len {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif hasattr(a, "tobytes") and hasattr(a, "mode"):  # PIL image
        assert (a.size, a.mode, a.tobytes()) == (b.size, b.mode, b.tobytes()), f"{path}: images differ"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_batches(expected: list[Any], actual: list[Any]) -> None:
    assert len(expected) == len(actual), f"{len(expected)} batches expected, got {len(actual)}"
    for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
        assert_same(e, a, f"batch {i}")


def ids(batches: list[Any], key: Any = None) -> list[int]:
    """Flatten sample ids out of batches (tensors, lists, dicts of column ``key``)."""
    out: list[int] = []
    for b in batches:
        v = b if key is None else b[key]
        if isinstance(v, torch.Tensor):
            out.extend(v.reshape(-1).tolist())
        elif isinstance(v, (list, tuple, np.ndarray)):
            out.extend(int(x) for x in v)
        else:
            out.append(int(v))
    return out


# ------------------------------------------------------------------------------ resume cases


def _row_features(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "feat": np.full(3, row["id"], dtype=np.float32)}


class NumpyBatchSampler:
    """A hand-written batch sampler drawing its order from the global ``numpy.random``."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Any:
        order = np.random.permutation(self.n).tolist()
        for i in range(0, self.n, self.batch_size):
            yield order[i : i + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


def make_resume_loader(case: str, num_workers: int) -> Any:
    """The loaders of the resume tests, built identically in the test and in the fresh process."""
    import torchray_loader as rd
    from torchray_loader import RayStyleLoader

    if case == "map_generator":
        return RayStyleLoader(
            TensorDS(23), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(5), num_workers=num_workers
        )
    if case == "map_seed":
        return RayStyleLoader(DictDS(23), batch_size=4, shuffle=True, seed=11, num_workers=num_workers)
    if case == "map_unseeded":
        return RayStyleLoader(TupleDS(23), batch_size=3, shuffle=True, num_workers=num_workers)
    if case == "map_no_batching":
        return RayStyleLoader(TensorDS(9), batch_size=None, shuffle=True, seed=2, num_workers=num_workers)
    if case == "map_user_sampler_generator":
        sampler = torch.utils.data.RandomSampler(range(21), generator=torch.Generator().manual_seed(6))
        return RayStyleLoader(TensorDS(21), batch_size=4, sampler=sampler, num_workers=num_workers)
    if case == "map_user_sampler_global":  # draws from torch's global RNG
        sampler = torch.utils.data.RandomSampler(range(21))
        return RayStyleLoader(TensorDS(21), batch_size=4, sampler=sampler, num_workers=num_workers)
    if case == "map_user_batch_sampler_numpy":
        return RayStyleLoader(TensorDS(19), batch_sampler=NumpyBatchSampler(19, 3), num_workers=num_workers)
    if case == "iterable":
        return RayStyleLoader(ShardedIterable(29), batch_size=3, num_workers=num_workers)
    if case == "iterable_dicts":
        return RayStyleLoader(TensorIterable(17), batch_size=2, num_workers=num_workers)
    if case == "arrow_shuffle":
        ds = rd.range(100, override_num_blocks=7).map(_row_features)
        return RayStyleLoader(ds, batch_size=8, shuffle=True, seed=3, shuffle_buffer_size=20, num_workers=num_workers)
    if case == "arrow_plain":
        return RayStyleLoader(rd.range(50, override_num_blocks=4), batch_size=7, num_workers=num_workers)
    if case == "arrow_unseeded":
        return RayStyleLoader(rd.range(40, override_num_blocks=5), batch_size=6, shuffle=True, num_workers=num_workers)
    raise KeyError(case)


RESUME_CASES = [
    "map_generator",
    "map_seed",
    "map_unseeded",
    "map_no_batching",
    "map_user_sampler_generator",
    "map_user_sampler_global",
    "map_user_batch_sampler_numpy",
    "iterable",
    "iterable_dicts",
    "arrow_shuffle",
    "arrow_plain",
    "arrow_unseeded",
]
#: Cases whose *next* epoch is reproducible in another process (no draw from the global RNG).
RESUME_NEXT_EPOCH_REPRODUCIBLE = {"map_generator", "map_seed", "map_no_batching", "map_user_sampler_generator", "iterable", "iterable_dicts", "arrow_shuffle", "arrow_plain"}


def resume_main(jobs_path: str, out_path: str) -> None:
    """Entry point of the fresh process: load each state, finish its epoch and run one more."""
    jobs = torch.load(jobs_path, weights_only=False)
    results = {}
    for key, job in jobs.items():
        loader = make_resume_loader(job["case"], job["num_workers"])
        loader.load_state_dict(job["state"])
        rest = list(loader)
        nxt = list(loader)
        results[key] = {"rest": rest, "next": nxt}
    torch.save(results, out_path)


# ------------------------------------------------------------------------------ distributed


def _plus_one(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "next": row["id"] + 1}


def gloo_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank of the real torch.distributed test (started by torch.multiprocessing.spawn)."""
    import json
    import os

    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    import torchray_loader as rd
    from torchray_loader import RayStyleLoader

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result: dict[str, Any] = {}
        for name, loader in {
            "map_shuffle_nw2": RayStyleLoader(TensorDS(37), batch_size=4, shuffle=True, num_workers=2),
            "map_seq": RayStyleLoader(TensorDS(37), batch_size=5),
            "arrow_shuffle": RayStyleLoader(rd.range(103, override_num_blocks=6).map(_plus_one), batch_size=8, shuffle=True),
            "arrow_filter": RayStyleLoader(rd.range(61).filter(_odd), batch_size=4, shuffle=True, seed=1),
        }.items():
            key = "id" if name.startswith("arrow") else None
            batches = list(loader)
            result[name] = {
                "ids": [int(x) // (10 if key is None else 1) for x in ids([b[:, 0] if key is None else b for b in batches], key)],
                "num_batches": len(batches),
                "len": len(loader),
            }
        sampler = DistributedSampler(TensorDS(37), shuffle=True, seed=5)
        ours = [b[:, 0].tolist() for b in RayStyleLoader(TensorDS(37), batch_size=4, sampler=sampler)]
        theirs = [b[:, 0].tolist() for b in DataLoader(TensorDS(37), batch_size=4, sampler=sampler)]
        result["distributed_sampler_equal"] = ours == theirs
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, result)
        if rank == 0:
            with open(os.path.join(out_dir, "result.json"), "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def _odd(row: dict[str, Any]) -> bool:
    return row["id"] % 2 == 1


class SlowDS(TensorDS):
    def __getitem__(self, i: int) -> torch.Tensor:
        import time

        if i == 4:
            time.sleep(30)
        return torch.tensor(i)


class DyingDS(TensorDS):
    def __getitem__(self, i: int) -> torch.Tensor:
        import os

        if i == 4:
            os._exit(3)
        return torch.tensor(i)
