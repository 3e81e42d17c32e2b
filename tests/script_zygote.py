"""Run Python scripts as separate processes, fast: fork them from a process that has torch imported.

The example scripts and the docs pages each need a fresh process, and most of such a process's CPU
time goes to ``import torch, torchvision`` (~6 CPU-seconds). A *zygote* process imports those once;
every script is then a forked child of it: its own process (own pid, process group, cwd, argv,
stdout/stderr files, ``__main__``), started with the heavy modules already in memory. Up to
``parallel`` scripts run at once.

Invariants: the zygote never runs torch operations or starts threads before forking (so a fork copy
is as clean as a fresh interpreter that imported the same modules); a script that outlives its
timeout is killed with its whole process group; closing the runner kills the zygote and anything
still running. Used by tests/examples and tests/docs only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRELOAD = ("numpy", "pyarrow", "torch", "torchvision", "PIL.Image", "torchray_loader")


@dataclass
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


# The zygote's main loop. It reads one JSON job per line on stdin and writes one JSON result per
# finished job on stdout. Kept as source text so the zygote needs no import of this test module.
_ZYGOTE = r'''
import atexit, importlib, json, os, runpy, select, signal, sys, time, traceback

for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
parallel = int(sys.argv[1])
queue, running = [], {}  # running: pid -> (job, deadline)
out = sys.stdout


def start(job):
    pid = os.fork()
    if pid == 0:  # the script's process
        code = 1
        try:
            # The zygote's SIGTERM handler must not survive into the script (and its workers).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setpgid(0, 0)
            os.chdir(job["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                f = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sys.stdin = open(os.devnull)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.environ.update(job.get("env", {}))
            sys.argv = list(job["argv"])
            sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                # A script's exit handlers run as in a normal interpreter exit (weakref finalizers
                # remove the package's temp files); os._exit alone would skip them.
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    running[pid] = (job, time.monotonic() + job["timeout"])


def report(job, code, timed_out=False):
    out.write(json.dumps({"id": job["id"], "returncode": code, "timed_out": timed_out}) + "\n")
    out.flush()


def stop(signum, frame):  # closing the runner: take every running script's process group along
    for pid in list(running):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(1)


signal.signal(signal.SIGTERM, stop)
eof, pending = False, b""
while not eof or queue or running:
    while queue and len(running) < parallel:
        start(queue.pop(0))
    # Raw reads on fd 0 with our own line buffer: a buffered readline() could hold several jobs
    # in its buffer while select() reports the descriptor as empty.
    if not eof and select.select([0], [], [], 0.05)[0]:
        chunk = os.read(0, 65536)
        if not chunk:
            eof = True
        pending += chunk
        *lines, pending = pending.split(b"\n")
        queue.extend(json.loads(line) for line in lines if line.strip())
    elif eof:
        time.sleep(0.05)
    for pid, (job, deadline) in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            del running[pid]
            report(job, os.waitstatus_to_exitcode(status))
        elif time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            del running[pid]
            report(job, -9, timed_out=True)
'''


class ScriptRunner:
    """Client side: ``submit(script, cwd=...)`` returns a Future of :class:`ScriptResult`."""

    def __init__(self, parallel: int = 2, preload: tuple[str, ...] = DEFAULT_PRELOAD) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["TORCHRAY_PROGRESS_BARS"] = "0"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, str(parallel), ",".join(preload)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        self._lock = threading.Lock()
        self._jobs: dict[int, tuple[Future[ScriptResult], Path, Path]] = {}
        self._next_id = 0
        self._reader = threading.Thread(target=self._read_results, name="zygote-results", daemon=True)
        self._reader.start()

    def submit(self, script: Path | str, cwd: Path, *, args: tuple[str, ...] = (), timeout: float = 240) -> Future[ScriptResult]:
        cwd.mkdir(parents=True, exist_ok=True)
        fut: Future[ScriptResult] = Future()
        with self._lock:
            job_id = self._next_id
            self._next_id += 1
            stdout, stderr = cwd / f".job{job_id}.stdout", cwd / f".job{job_id}.stderr"
            self._jobs[job_id] = (fut, stdout, stderr)
            job = {
                "id": job_id, "argv": [str(script), *args], "cwd": str(cwd), "timeout": timeout,
                "stdout": str(stdout), "stderr": str(stderr),
            }
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
        return fut

    def _read_results(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            msg = json.loads(line)
            with self._lock:
                fut, stdout, stderr = self._jobs.pop(msg["id"])
            err = stderr.read_text(errors="replace")
            if msg["timed_out"]:
                err += "\n[killed: timed out]"
            fut.set_result(ScriptResult(msg["returncode"], stdout.read_text(errors="replace"), err, msg["timed_out"]))
        # The zygote exited: fail whatever is still waiting instead of hanging.
        with self._lock:
            for fut, _, _ in self._jobs.values():
                fut.set_result(ScriptResult(-1, "", "the script runner (zygote) exited unexpectedly"))
            self._jobs.clear()

    def close(self, grace_s: float = 10) -> None:
        """Stop taking jobs and let the zygote finish the queued ones; after ``grace_s`` it is
        terminated, and it kills the scripts still running (each with its process group)."""
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=5)
