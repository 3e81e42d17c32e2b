"""The benchmark suite's quick mode runs end to end and writes the JSON the docs are built from.

No speed thresholds here: this only checks that the harness works (CI runs it as a smoke test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)

SUMMARY_FIELDS = {
    "workload", "variant", "impl", "num_workers", "status", "reason", "runs", "rows", "rows_per_s", "ttfb_s",
    "peak_rss_mb", "peak_pss_mb", "vs_dataloader", "vs_ray", "notes",
}


def _run_suite(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--scale", "0.25", "--out", str(out),
         "--data-dir", str(tmp_path / "data"), "--no-docs", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=220,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rows/s" in proc.stdout
    return json.loads((out / "results.json").read_text())


def test_quick_suite_writes_results(tmp_path: Path) -> None:
    payload = _run_suite(tmp_path, "--only", "W1,W4,W7/tabular", "--impls", "torchray,loader,dataloader",
                         "--workers", "2", "--processes", "one")
    assert payload["mode"] == "quick"
    assert {"machine", "pieces", "sizes", "summary", "targets", "runs", "command"} <= set(payload)
    assert payload["machine"]["cores"] >= 1
    rows = [r for r in payload["summary"] if r["workload"] != "W7"]
    assert {(r["workload"], r["impl"]) for r in rows} == {
        (w, i) for w in ("W1", "W4") for i in ("torchray", "loader", "dataloader")
    }
    for r in rows:
        assert SUMMARY_FIELDS <= set(r), r
        assert r["status"] in ("ok", "unavailable", "error")
        if r["status"] == "ok":
            assert r["rows"] > 0 and r["rows_per_s"] > 0 and r["ttfb_s"] >= 0
            assert r["peak_rss_mb"] > 0
        else:
            assert r["reason"]
    # the DataLoader baselines need nothing from the package: they always run
    baselines = [r for r in rows if r["impl"] == "dataloader"]
    assert all(r["status"] == "ok" for r in baselines), baselines
    assert all(r["vs_dataloader"] == pytest.approx(1.0) for r in baselines)
    for t in payload["targets"]:
        assert {"target", "value", "threshold", "passed"} <= set(t)
    try:
        import matplotlib  # noqa: F401

        assert (tmp_path / "out" / "performance.png").stat().st_size > 0
    except ImportError:
        pass
    # W7 needs CUDA; without it every implementation is an "unavailable" row, not a crash.
    gpu_rows = [r for r in payload["summary"] if r["workload"] == "W7"]
    assert len(gpu_rows) == 3
    if not payload["machine"]["cuda"]:
        assert all(r["status"] == "unavailable" and "CUDA" in r["reason"] for r in gpu_rows), gpu_rows


def _synthetic_runs() -> list[dict]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.harness import Result

    runs = []
    for rep, (tr, dl, ray) in enumerate([(3.0e6, 1.0e5, 5.0e4), (3.3e6, 1.1e5, 6.0e4), (2.9e6, 0.9e5, 5.5e4)]):
        for impl, rate in (("torchray", tr), ("dataloader", dl), ("ray", ray)):
            runs.append(Result("W1", "default", impl, 2, repeat=rep, rows=1000, rows_per_s=rate, ttfb_s=0.1,
                               peak_rss_mb=500.0, peak_pss_mb=400.0).to_dict())
    runs.append(Result("W2", "default", "torchray", 2, status="unavailable", reason="no read_parquet").to_dict())
    return runs


def test_summary_medians_ratios_and_docs() -> None:
    from benchmarks import report

    summary = report.summarize(_synthetic_runs())
    w1 = {r["impl"]: r for r in summary if r["workload"] == "W1"}
    assert w1["torchray"]["rows_per_s"] == 3.0e6 and w1["torchray"]["runs"] == 3
    assert w1["torchray"]["vs_dataloader"] == pytest.approx(30.0)
    assert w1["torchray"]["vs_ray"] == pytest.approx(3.0e6 / 5.5e4)
    w2 = next(r for r in summary if r["workload"] == "W2")
    assert w2["status"] == "unavailable" and w2["rows_per_s"] is None and w2["vs_dataloader"] is None
    targets = {t["target"]: t for t in report.evaluate_targets(summary)}
    assert targets["W1-dataloader"]["passed"] is True
    assert targets["W1-ray"]["passed"] is True
    assert targets["W2-rows"]["passed"] is None
    payload = {
        "mode": "full", "created": "now", "elapsed_s": 1.0, "command": "python -m benchmarks run", "repeats": 3,
        "processes": "run", "machine": report.machine_info(), "pieces": {"commit": "abc", "read_parquet": False},
        "sizes": {}, "summary": summary, "targets": list(targets.values()), "runs": [],
    }
    md = report.markdown(payload)
    assert "Preliminary" in md and "`read_parquet`" in md
    assert "| W1 | 2 | torchray Dataset | 3.00M |" in md


def _full_payload(runs: list[dict], **fields) -> dict:
    """A full-mode report payload over ``runs`` (``fields`` override its keys)."""
    from benchmarks import report

    payload = {
        "mode": "full", "created": "now", "elapsed_s": 60.0, "command": "python -m benchmarks run", "repeats": 3,
        "processes": "run", "machine": report.machine_info(), "pieces": {"commit": "abc"}, "sizes": {},
        "summary": report.summarize(runs), "targets": [], "runs": runs,
    }
    return {**payload, **fields}


def test_report_merges_a_later_results_file_and_names_it(tmp_path: Path) -> None:
    from benchmarks import report
    from benchmarks.__main__ import main

    runs = _synthetic_runs()
    base = _full_payload(runs, created="then", pieces={"commit": "old"})
    faster = [dict(r, rows_per_s=r["rows_per_s"] * 2) for r in runs if r["workload"] == "W1" and r["impl"] == "torchray"]
    later = dict(base, created="now", command="python -m benchmarks run --only W1", pieces={"commit": "new"}, runs=faster)
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "later.json").write_text(json.dumps(later))
    assert main(["report", str(tmp_path / "base.json"), str(tmp_path / "later.json"), "--out", str(tmp_path / "m.json")]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    w1 = {(r["impl"], r["num_workers"]): r for r in merged["summary"] if r["workload"] == "W1"}
    assert w1[("torchray", 2)]["rows_per_s"] == 6.0e6
    (entry,) = merged["merged"]
    assert entry["created"] == "now" and entry["commit"] == "new" and entry["command"].endswith("--only W1")
    md = report.markdown(merged)
    assert "Re-measured later and merged in" in md and "at package commit `new`" in md


def test_report_checks_the_current_targets_even_for_one_file(tmp_path: Path) -> None:
    from benchmarks.__main__ import main

    (tmp_path / "old.json").write_text(json.dumps(_full_payload(_synthetic_runs(), targets=[])))
    assert main(["report", str(tmp_path / "old.json"), "--out", str(tmp_path / "new.json")]) == 0
    targets = {t["target"] for t in json.loads((tmp_path / "new.json").read_text())["targets"]}
    assert {"W1-dataloader", "W1-ray"} <= targets


def test_a_gpu_run_gets_its_own_page_that_the_main_page_links(tmp_path: Path) -> None:
    from benchmarks import report

    payload = _full_payload(_synthetic_runs())
    report.write_docs(payload, tmp_path)
    assert report.GPU_PAGE not in (tmp_path / "performance.md").read_text()
    gpu = dict(payload, machine=dict(payload["machine"], cuda="NVIDIA H200"))
    written = report.write_docs(gpu, tmp_path, report.GPU_PAGE)
    assert tmp_path / f"{report.GPU_PAGE}.md" in written and (tmp_path / f"{report.GPU_PAGE}.json").is_file()
    page = (tmp_path / f"{report.GPU_PAGE}.md").read_text()
    assert page.startswith("# Performance on a GPU machine") and "GPU: NVIDIA H200" in page
    assert f"![speed-ups]({report.GPU_PAGE}.png)" in page
    report.write_docs(payload, tmp_path)
    assert f"[{report.GPU_PAGE}.md]({report.GPU_PAGE}.md)" in (tmp_path / "performance.md").read_text()
