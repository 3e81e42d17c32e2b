"""Ctrl-C, and the main process ending while an iterator is still open.

Each scenario runs in a child interpreter (its own session, so a Ctrl-C to its process group reaches
its workers as a terminal's would, and never pytest). The child starts iterating with two workers,
prints its pid and its workers' pids after a few batches, then meets its fault. Afterwards the test
checks, from outside:

* the child ended as the fault implies (exit code), without hanging (every wait is bounded);
* no worker process survives it (a worker whose parent is gone exits on its own within about a
  second, even in the middle of a task);
* no shared-memory transfer file ``torchray_<child pid>_*`` remains, whatever the way the child
  ended (a worker that sees its parent die removes the files of that parent).

Batches are larger than ``shm.INLINE_THRESHOLD`` so results really travel through ``/dev/shm``.
"""

from __future__ import annotations

import signal

import pytest
from reliability_helpers import finish_child, start_child, transfer_files, wait_gone

pytestmark = pytest.mark.timeout(180)

CHILD = r"""
import json, os, signal, sys, time
import numpy as np, psutil
mode = sys.argv[1]
import torchray_loader as rd
rd.DataContext.get_current().num_workers = 2

def report(**kw):
    print(json.dumps(kw), flush=True)

def children():
    return [p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]

def heavy(batch):
    time.sleep(0.02)
    return {"id": batch["id"], "x": np.ones((len(batch["id"]), 20_000), np.float32)}  # 80 kB per row

def slow(batch):
    time.sleep(0.2)
    return batch

def init_worker(worker_id):
    pass

def batches():
    if mode.startswith("shuffle-heavy"):  # the consumer holds every gathered block's transfer file
        return rd.range(4000, override_num_blocks=80).map_batches(heavy).random_shuffle(seed=0).iter_batches(batch_size=25)
    if mode.startswith("shuffle"):  # the shuffle gathers its whole input before its first batch
        return rd.range(4000, override_num_blocks=80).map_batches(slow).random_shuffle(seed=0).iter_batches(batch_size=25)
    if mode.startswith("loader-map"):  # a torch map-style dataset fetched in the workers
        import torch
        ds = torch.utils.data.TensorDataset(torch.ones(400, 20_000))
        return rd.RayStyleLoader(ds, batch_size=25, num_workers=2, worker_init_fn=init_worker)
    if mode.startswith("loader"):
        import torch
        ds = rd.range(4000, override_num_blocks=80).map_batches(heavy)
        return rd.RayStyleLoader(ds, batch_size=25, num_workers=2)
    return rd.range(4000, override_num_blocks=80).map_batches(heavy).iter_batches(batch_size=25, prefetch_batches=2)

def fault():
    report(pid=os.getpid(), workers=children())
    if mode.endswith("sigint"):
        os.killpg(0, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        time.sleep(30)
    elif mode == "sys-exit":
        sys.exit(3)
    elif mode == "os-exit":
        os._exit(4)
    elif mode.endswith("sigkill"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "uncaught":
        raise RuntimeError("boom in the training loop")

if mode == "shuffle-caught-sigint":
    import threading
    sent = []
    def interrupt():
        t0 = time.monotonic()  # Ctrl-C once the gathering runs on workers (a loaded machine starts slowly)
        while not children() and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        time.sleep(0.5)
        sent.append(time.monotonic())
        fault()
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        for b in batches():
            pass
    except KeyboardInterrupt:
        t0 = time.monotonic()
        while children() and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        files = [f for f in os.listdir("/dev/shm") if f.startswith(f"torchray_{os.getpid()}_")]
        # seconds: from Ctrl-C until the loop's except block ran and the workers were gone
        report(interrupted=True, left=children(), seconds=time.monotonic() - sent[0], shm=files)
elif mode in ("fall-off", "loader-fall-off", "loader-map-fall-off"):
    it = iter(batches())
    for _ in range(3):
        next(it)
    report(pid=os.getpid(), workers=children())
    # the script ends here with `it` open: interpreter exit must stop the workers
elif mode in ("caught-sigint", "loader-caught-sigint"):
    try:
        for i, b in enumerate(batches()):
            if i == 2:
                fault()
    except KeyboardInterrupt:
        t0 = time.monotonic()
        while children() and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        files = [f for f in os.listdir("/dev/shm") if f.startswith(f"torchray_{os.getpid()}_")]
        report(interrupted=True, left=children(), seconds=time.monotonic() - t0, shm=files)
else:
    for i, b in enumerate(batches()):
        if i == 2:
            fault()
"""

# mode -> expected exit code (negative: killed by that signal)
DATASET_MODES = {
    "fall-off": 0,
    "sys-exit": 3,
    "os-exit": 4,
    "sigkill": -signal.SIGKILL,
    "uncaught": 1,
    "caught-sigint": 0,
    "uncaught-sigint": -signal.SIGINT,  # Python re-raises SIGINT to die of it
    "shuffle-caught-sigint": 0,  # Ctrl-C while an all-to-all step gathers its input
    # killed after a shuffle, its task pool's workers retired: the one kept as a watchdog cleans up
    "shuffle-heavy-sigkill": -signal.SIGKILL,
}
LOADER_MODES = {
    "loader-fall-off": 0,
    "loader-map-fall-off": 0,
    "loader-caught-sigint": 0,
    "loader-uncaught-sigint": -signal.SIGINT,
}


def run_modes(modes: dict[str, int]) -> None:
    """Run every mode in its own child, concurrently, and check each one's aftermath."""
    procs = {mode: start_child(CHILD, mode, new_session=True) for mode in modes}
    problems = []
    for mode, proc in procs.items():
        code, reports, err = finish_child(proc, timeout=150)
        if not reports:
            problems.append(f"{mode}: child reported nothing (exit {code}): {err[-1500:]}")
            continue
        first = reports[0]
        if code != modes[mode]:
            problems.append(f"{mode}: exit code {code}, expected {modes[mode]}: {err[-1500:]}")
        if not first["workers"]:
            problems.append(f"{mode}: no workers were running at the fault")
        left = wait_gone(first["workers"], 10)
        if left:
            problems.append(f"{mode}: workers {left} outlived their parent")
        files = transfer_files(first["pid"])
        if files:
            problems.append(f"{mode}: shared-memory files left behind: {files}")
        if mode.endswith("caught-sigint") and not mode.endswith("uncaught-sigint"):
            after = reports[-1]
            if not after.get("interrupted"):
                problems.append(f"{mode}: KeyboardInterrupt did not reach the training loop: {reports}")
            elif after["left"] or after["shm"] or after["seconds"] > 5:
                problems.append(f"{mode}: after KeyboardInterrupt, workers {after['left']} / files {after['shm']} "
                                f"({after['seconds']:.1f}s)")
        if "Traceback" in err and mode not in ("uncaught", "uncaught-sigint", "loader-uncaught-sigint"):
            problems.append(f"{mode}: unexpected traceback on stderr: {err[-1500:]}")
        if mode == "uncaught" and "boom in the training loop" not in err:
            problems.append(f"{mode}: the user's exception was not reported: {err[-1500:]}")
        if mode.endswith("uncaught-sigint") and "KeyboardInterrupt" not in err:
            problems.append(f"{mode}: no KeyboardInterrupt traceback: {err[-1500:]}")
    assert not problems, "\n".join(problems)


def test_dataset_iteration_survives_ctrl_c_and_every_way_the_process_can_end():
    run_modes(DATASET_MODES)


def test_loader_iteration_survives_ctrl_c_and_interpreter_exit_with_an_open_iterator():
    run_modes(LOADER_MODES)
