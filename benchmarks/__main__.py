"""``python -m benchmarks run [--quick] [--only W1,W3] [--repeats N] [--out DIR]``.

Full mode (by hand): every workload at num_workers 0, 2 (and all cores where there are more), three
alternating runs (torchray, loader, DataLoader, Ray, torchray, ...), each run in a fresh process;
prints the table, writes ``<out>/results.json`` and ``<out>/performance.png``, and regenerates
``docs/performance.md`` (+ ``docs/performance.png``, ``docs/performance.json``).

Quick mode (CI smoke test, ~2 minutes on 2 cores): small data, one run, no warm epoch, one process
per (implementation, num_workers), Ray only at the largest worker count; never touches ``docs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import harness, report
from .data import default_data_dir
from .harness import Job, Result
from .workloads import MODULES, get_workload

IMPLS = ("torchray", "loader", "dataloader", "ray")


def _parse_only(spec: str | None) -> list[tuple[str, str | None]]:
    if not spec:
        return [(w, None) for w in MODULES]
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        wid, _, variant = item.partition("/")
        wid = wid.upper()
        if wid not in MODULES:
            raise SystemExit(f"--only: unknown workload {wid!r}; known: {', '.join(MODULES)}")
        out.append((wid, variant or None))
    return out


def default_workers() -> list[int]:
    workers = [0, 2]
    cores = os.cpu_count() or 1
    if cores > 2:
        workers.append(cores)
    return workers


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    impls = [i.strip() for i in args.impls.split(",")] if args.impls else list(IMPLS)
    for i in impls:
        if i not in IMPLS:
            raise SystemExit(f"--impls: unknown implementation {i!r}; known: {', '.join(IMPLS)}")
    workers = [int(w) for w in args.workers.split(",")] if args.workers else default_workers()
    jobs = []
    for wid, only_variant in _parse_only(args.only):
        module = get_workload(wid)
        for variant, variant_impls in module.VARIANTS.items():
            if only_variant and variant != only_variant:
                continue
            for nw in workers:
                for rep in range(args.repeats):
                    for impl in impls:  # alternate: A, B, C, A, B, C
                        if impl == "ray" and args.quick and nw != max(workers):
                            continue  # quick: Ray (seconds of start-up per process) at one worker count only
                        if impl in variant_impls:
                            jobs.append(Job(wid, variant, impl, nw, rep, args.quick, args.scale, str(args.data_dir),
                                            args.max_epoch_s or None))
    return jobs


def _progress(job: Job, res: Result) -> None:
    if res.status == "ok":
        rss = f"{res.peak_rss_mb:.0f}" if res.peak_rss_mb is not None else "-"
        pss = f"{res.peak_pss_mb:.0f}" if res.peak_pss_mb is not None else "-"
        line = (f"{res.rows_per_s:>12,.0f} rows/s  first batch {res.ttfb_s:6.3f} s  "
                f"peak RSS {rss} MB (PSS {pss})")
    else:
        line = f"{res.status}: {res.reason[:150]}"
    extra = f"  [{'; '.join(res.notes)}]" if res.notes else ""
    print(f"  {job.key:<36} {line}{extra}", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(args)
    if not jobs:
        raise SystemExit("nothing to run (check --only / --impls)")
    processes = args.processes or ("group" if args.quick else "run")
    timeout = args.job_timeout or (180.0 if args.quick else 900.0)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    mode = "quick" if args.quick else "full"
    how = {"run": "a fresh process per run", "group": "one process per implementation and worker count",
           "one": "all runs in one process"}[processes]
    print(f"torchray_loader benchmarks ({mode}): {len(jobs)} runs, {how}; data in {args.data_dir}", flush=True)
    t0 = time.perf_counter()
    work = out / "work"
    groups: dict[object, list[Job]] = {}
    for i, job in enumerate(jobs):
        key = i if processes == "run" else (job.impl, job.num_workers) if processes == "group" else 0
        groups.setdefault(key, []).append(job)
    runs_log = out / "runs.jsonl"  # every result as it arrives: survives an interrupted run
    runs_log.write_text("")

    def record(job: Job, res: Result) -> None:
        _progress(job, res)
        with open(runs_log, "a") as f:
            f.write(json.dumps(res.to_dict()) + "\n")

    by_key: dict[str, Result] = {}
    unavailable: dict[tuple[str, str, str, int], Result] = {}
    for group in groups.values():
        if processes == "run":
            job = group[0]
            known = unavailable.get((job.workload, job.variant, job.impl, job.num_workers))
            if known is not None:  # a missing piece stays missing: skip the other repeats
                by_key[job.key] = dataclasses.replace(known, repeat=job.repeat)
                continue
        for job, res in zip(group, harness.run_jobs(group, work_dir=work, job_timeout_s=timeout, on_result=record),
                            strict=True):
            by_key[job.key] = res
            if res.status == "unavailable":
                unavailable[(job.workload, job.variant, job.impl, job.num_workers)] = res
    results = [by_key[j.key] for j in jobs]
    try:
        work.rmdir()
    except OSError:
        pass  # logs of failed runs stay there
    elapsed = time.perf_counter() - t0
    payload = report.build_payload(results, mode=mode, command=command, elapsed_s=elapsed,
                                   repeats=args.repeats, processes=processes, scale=args.scale)
    payload["max_epoch_s"] = args.max_epoch_s or None
    report.print_table(payload)
    json_path = out / "results.json"
    report.write_json(payload, json_path)
    png_path = out / "performance.png"
    plotted = report.plot(payload, png_path)
    print(f"\nwrote {json_path}" + (f" and {png_path}" if plotted else " (no plot: matplotlib missing)"))
    write_docs = args.docs if args.docs is not None else not args.quick
    if write_docs:
        paths = report.write_docs(payload, report.DOCS_DIR)
        print("regenerated " + ", ".join(str(p) for p in paths))
    print(f"done in {elapsed:.0f} s")
    return 0


def _runs_of(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return report.read_json(path)["runs"]


def cmd_report(args: argparse.Namespace) -> int:
    first, *others = [Path(p) for p in args.results]
    payload = report.read_json(first)
    if others:  # later files replace the runs of the configurations they contain
        runs = payload["runs"]
        for path in others:
            new = _runs_of(path)
            keys = {(r["workload"], r["variant"], r["impl"], r["num_workers"]) for r in new}
            runs = [r for r in runs if (r["workload"], r["variant"], r["impl"], r["num_workers"]) not in keys] + new
            merged = {"file": str(path), "configurations": sorted("/".join(map(str, k)) for k in keys)}
            if path.suffix != ".jsonl":  # a results.json says when, at which commit and how it ran
                other = report.read_json(path)
                merged.update(created=other.get("created"), commit=other.get("pieces", {}).get("commit"),
                              command=other.get("command"))
            payload.setdefault("merged", []).append(merged)
        payload["runs"] = runs
        payload["summary"] = report.summarize(runs)
    # Targets are re-checked on every report: a results file keeps the list of the run that wrote it.
    payload["targets"] = report.evaluate_targets(payload["summary"])
    if args.out:
        report.write_json(payload, Path(args.out))
        print(f"wrote {args.out}")
    report.print_table(payload)
    if args.docs:
        paths = report.write_docs(payload, report.DOCS_DIR, args.docs_name)
        print("regenerated " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:  # internal: one job process
        return harness.child_main(argv[1], argv[2])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the suite")
    run.add_argument("--quick", action="store_true", help="small data, one run each (CI smoke test)")
    run.add_argument("--only", help="workloads, e.g. W1,W3 or W3/float")
    run.add_argument("--impls", help=f"implementations (default all): {','.join(IMPLS)}")
    run.add_argument("--workers", help="num_workers values, e.g. 0,2 (default: 0, 2 and all cores if more)")
    run.add_argument("--repeats", type=int, help="alternating runs per configuration (default 3, quick 1)")
    run.add_argument("--scale", type=float, default=1.0, help="multiply the data sizes (e.g. 0.25)")
    run.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                     help="output folder for results.json and performance.png (default benchmarks/results)")
    run.add_argument("--data-dir", help="cache for generated data (default $TORCHRAY_BENCH_DATA or "
                                        "benchmarks/results/data)")
    run.add_argument("--processes", choices=("run", "group", "one"),
                     help="run: a fresh process per run (default in full mode); group: one process per "
                          "implementation and worker count (default in quick mode); one: a single process")
    run.add_argument("--max-epoch-s", type=float, default=60.0,
                     help="stop a timed epoch this many seconds after its first batch and report rows/s over what "
                          "it delivered (default 60; 0: never)")
    run.add_argument("--job-timeout", type=float, help="seconds before a run is killed (default 900, quick 180)")
    run.add_argument("--docs", dest="docs", action="store_true", default=None,
                     help="regenerate docs/performance.md (default in full mode)")
    run.add_argument("--no-docs", dest="docs", action="store_false")
    run.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report", help="print the table of a results.json (and optionally rewrite docs)")
    rep.add_argument("results", nargs="+", help="a results.json, then optionally more results.json / runs.jsonl "
                                               "whose configurations replace those of the first")
    rep.add_argument("--out", help="write the (merged) results.json here")
    rep.add_argument("--docs", action="store_true", help="regenerate docs/performance.md from it")
    rep.add_argument("--docs-name", default="performance",
                     help=f"the page's name in docs/ (e.g. {report.GPU_PAGE} for a run on a GPU machine)")
    rep.set_defaults(fn=cmd_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
