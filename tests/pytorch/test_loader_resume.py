"""Resume: stop after k batches, save ``state_dict()``, load it in a *fresh process* (with another
``num_workers``), and the concatenation equals an uninterrupted epoch; the epoch after it too."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from loader_cases import (
    RESUME_CASES,
    RESUME_NEXT_EPOCH_REPRODUCIBLE,
    TensorDS,
    assert_same_batches,
    make_resume_loader,
)

from torchray_loader import RayStyleLoader

pytestmark = pytest.mark.timeout(300)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STOP_AFTER = {"map_no_batching": 4}
WORKER_CHANGES = [(0, 2), (2, 0)]


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _job_key(case: str, before: int, after: int) -> str:
    return f"{case}:{before}->{after}"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Run every (case, num_workers change): the reference epochs and the interrupted first part
    here, the rest in ONE fresh Python process (so the suite pays for one interpreter start)."""
    tmp = tmp_path_factory.mktemp("resume")
    jobs, expected = {}, {}
    for case in RESUME_CASES:
        for before, after in WORKER_CHANGES:
            key = _job_key(case, before, after)
            _seed_globals(99)  # the unseeded cases draw from the global RNGs: same draws twice
            ref = make_resume_loader(case, before)
            epoch1, epoch2 = list(ref), list(ref)
            _seed_globals(99)
            loader = make_resume_loader(case, before)
            k = STOP_AFTER.get(case, 2)
            it = iter(loader)
            head = [next(it) for _ in range(k)]
            state = loader.state_dict()
            del it
            assert state["batches_yielded"] == k
            jobs[key] = {"case": case, "num_workers": after, "state": state}
            if case.startswith("iterable"):
                # An IterableDataset's batches depend on the worker count: the resumed epoch keeps the
                # old layout, the next epoch uses the new one.
                epoch2 = list(make_resume_loader(case, after))
            expected[key] = {"epoch1": epoch1, "epoch2": epoch2, "head": head}
    jobs_path, out_path = str(tmp / "jobs.pt"), str(tmp / "out.pt")
    torch.save(jobs, jobs_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, REPO, os.environ.get("PYTHONPATH", "")]))
    code = f"import loader_cases; loader_cases.resume_main({jobs_path!r}, {out_path!r})"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return expected, torch.load(out_path, weights_only=False)


@pytest.mark.parametrize("before,after", WORKER_CHANGES)
@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_in_fresh_process(resumed, case, before, after):
    expected, results = resumed
    key = _job_key(case, before, after)
    exp, got = expected[key], results[key]
    assert_same_batches(exp["epoch1"], exp["head"] + got["rest"])
    if case in RESUME_NEXT_EPOCH_REPRODUCIBLE:
        assert_same_batches(exp["epoch2"], got["next"])
    else:
        assert len(got["next"]) == len(exp["epoch2"])


def test_state_between_epochs_starts_the_next_epoch():
    ref = RayStyleLoader(TensorDS(10), batch_size=3, shuffle=True, seed=4)
    epochs = [list(ref) for _ in range(3)]
    loader = RayStyleLoader(TensorDS(10), batch_size=3, shuffle=True, seed=4)
    list(loader)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches_yielded"] == 0
    fresh = RayStyleLoader(TensorDS(10), batch_size=3, shuffle=True, seed=4)
    fresh.load_state_dict(state)
    assert_same_batches(epochs[1], list(fresh))
    assert_same_batches(epochs[2], list(fresh))


def test_resume_with_user_generator_restores_its_state():
    g_ref = torch.Generator().manual_seed(8)
    ref = RayStyleLoader(TensorDS(10), batch_size=2, shuffle=True, generator=g_ref)
    e1, e2 = list(ref), list(ref)
    g = torch.Generator().manual_seed(8)
    loader = RayStyleLoader(TensorDS(10), batch_size=2, shuffle=True, generator=g)
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    state = loader.state_dict()
    # A new loader whose generator has another seed: the state carries the generator's state.
    fresh = RayStyleLoader(TensorDS(10), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(123))
    fresh.load_state_dict(state)
    assert_same_batches(e1, head + list(fresh))
    assert_same_batches(e2, list(fresh))


def test_set_epoch_after_loading_a_state_between_epochs_sets_that_epoch():
    ref = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    epochs = {}
    for e in range(3):
        ref.set_epoch(e)
        epochs[e] = list(ref)
    loader = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    loader.set_epoch(0)
    list(loader)
    state = loader.state_dict()  # end of epoch 0, the usual checkpoint
    fresh = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    fresh.load_state_dict(state)
    for e in (1, 2):
        fresh.set_epoch(e)
        assert_same_batches(epochs[e], list(fresh))


def test_set_epoch_does_not_move_a_loaded_mid_epoch_state():
    ref = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    ref.set_epoch(2)
    expected = list(ref)
    loader = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    loader.set_epoch(2)
    it = iter(loader)
    head = [next(it)]
    fresh = RayStyleLoader(TensorDS(12), batch_size=4, shuffle=True, seed=5)
    fresh.load_state_dict(loader.state_dict())
    fresh.set_epoch(2)
    assert_same_batches(expected, head + list(fresh))


def test_user_sampler_state_loads_with_weights_only(tmp_path):
    sampler = torch.utils.data.RandomSampler(range(10), generator=torch.Generator().manual_seed(1))
    loader = RayStyleLoader(TensorDS(10), batch_size=3, sampler=sampler)
    it = iter(loader)
    head = [next(it)]
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    sampler2 = torch.utils.data.RandomSampler(range(10), generator=torch.Generator().manual_seed(77))
    fresh = RayStyleLoader(TensorDS(10), batch_size=3, sampler=sampler2)
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert sorted(int(b[0]) // 10 for b in torch.cat(head + rest)) == list(range(10))
    assert_same_batches(head + list(it), head + rest)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_distributed_sampler_resumes_its_own_epoch(tmp_path, num_workers):
    """The state carries the sampler's epoch: a resume needs no ``set_epoch`` call to draw as the
    interrupted epoch did (without it a DistributedSampler draws epoch 0's order)."""
    def make():
        sampler = torch.utils.data.DistributedSampler(range(40), num_replicas=2, rank=0, shuffle=True, seed=3)
        return RayStyleLoader(TensorDS(40), batch_size=4, sampler=sampler, num_workers=num_workers), sampler

    loader, sampler = make()
    sampler.set_epoch(1)
    expected = list(loader)
    it = iter(loader)
    head = [next(it), next(it)]
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    del it
    fresh, _ = make()
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert_same_batches(expected, head + list(fresh))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pipeline_shuffled_without_a_seed_resumes_exactly(num_workers):
    """``random_shuffle()`` with no seed draws a new order every epoch (as in Ray); the loader's state
    keeps the epoch's draw, so a resume continues that order (it drew a new one: rows lost and repeated)."""
    import torchray_loader as rd

    def make():
        return RayStyleLoader(rd.range(300, override_num_blocks=6).random_shuffle(), batch_size=25,
                              num_workers=num_workers)

    loader = make()
    it = iter(loader)
    head = [next(it)["id"] for _ in range(3)]
    state = loader.state_dict()
    expected = head + [b["id"] for b in it]
    fresh = make()
    fresh.load_state_dict(state)
    got = head + [b["id"] for b in fresh]
    assert torch.equal(torch.cat(got), torch.cat(expected))
    assert sorted(torch.cat(got).tolist()) == list(range(300))
    epochs = [torch.cat([b["id"] for b in make()]) for _ in range(2)]
    assert not torch.equal(*epochs)  # still a new order each epoch


def test_an_end_of_epoch_state_of_persistent_workers_resumes_the_same_later_epochs():
    """Persistent workers draw their base seed from the generator once; a loader resumed between
    epochs must not draw it again, or every later permutation differs from the uninterrupted run's."""
    def make():
        return RayStyleLoader(TensorDS(24), batch_size=4, shuffle=True, num_workers=2, persistent_workers=True,
                              generator=torch.Generator().manual_seed(7))

    ref = make()
    expected = [list(ref) for _ in range(3)]
    ref.close()
    loader = make()
    list(loader)
    state = loader.state_dict()
    loader.close()
    fresh = make()
    fresh.load_state_dict(state)
    for e in (1, 2):
        assert_same_batches(expected[e], list(fresh))
    fresh.close()


def test_resume_leaves_the_global_rngs_to_the_caller():
    """The replayed first draw runs from the recorded state; the caller's own RNGs are given back."""
    loader = RayStyleLoader(TensorDS(10), batch_size=3, sampler=torch.utils.data.RandomSampler(range(10)))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    fresh = RayStyleLoader(TensorDS(10), batch_size=3, sampler=torch.utils.data.RandomSampler(range(10)))
    fresh.load_state_dict(state)
    _seed_globals(3)
    rest = iter(fresh)
    next(rest)
    after = (random.random(), float(np.random.rand()), torch.rand(1).item())
    _seed_globals(3)
    assert after == (random.random(), float(np.random.rand()), torch.rand(1).item())


def test_set_epoch_makes_epochs_reproducible():
    loader = RayStyleLoader(TensorDS(10), batch_size=3, shuffle=True, seed=4)
    loader.set_epoch(5)
    a = list(loader)
    other = RayStyleLoader(TensorDS(10), batch_size=3, shuffle=True, seed=4, num_workers=2)
    other.set_epoch(5)
    assert_same_batches(a, list(other))
    other.set_epoch(6)
    assert [t.tolist() for t in list(other)] != [t.tolist() for t in a]


class _NumpyGeneratorSampler(torch.utils.data.Sampler):
    """Draws each epoch from a numpy Generator it keeps, and tells its state as torchdata's
    stateful samplers do."""

    def __init__(self, n: int = 12) -> None:
        self.n = n
        self.rng = np.random.default_rng(0)

    def __iter__(self):
        return iter(self.rng.permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_sampler_with_its_own_state_dict_resumes_its_order(tmp_path, num_workers):
    def make() -> RayStyleLoader:
        return RayStyleLoader(TensorDS(12), sampler=_NumpyGeneratorSampler(), batch_size=4, num_workers=num_workers)

    loader = make()
    list(loader)  # epoch 0 moves the sampler's generator on
    it = iter(loader)
    first = next(it)
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    rest = list(it)
    fresh = make()  # a new process: the sampler starts from its seed again
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    resumed = list(fresh)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in rest]
    assert sorted(torch.cat([first, *resumed])[:, 0].tolist()) == [10.0 * i for i in range(12)]
