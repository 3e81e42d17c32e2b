"""Results -> medians, ratios, target checks; a table on stdout, JSON, a PNG and docs/performance.md."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .harness import REPO_ROOT, Result, median
from .workloads import MODULES, get_workload

DOCS_DIR = REPO_ROOT / "docs"
SCHEMA_VERSION = 1
IMPL_ORDER = {"torchray": 0, "loader": 1, "dataloader": 2, "ray": 3}
IMPL_LABEL = {
    "torchray": "torchray Dataset",
    "loader": "RayStyleLoader",
    "dataloader": "DataLoader",
    "ray": "Ray Data",
}

# (id, text, workload, variants, impls, metric, op, threshold, num_workers or None for all)
TARGETS: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...], str, str, float, int | None]] = [
    ("W1-dataloader", "W1 >= 30x DataLoader", "W1", ("default",), ("torchray",), "vs_dataloader", ">=", 30, None),
    ("W1-ray", "W1 >= 40x Ray Data", "W1", ("default",), ("torchray",), "vs_ray", ">=", 40, None),
    ("W2-rows", "W2 >= 1,000,000 rows/s", "W2", ("default",), ("torchray",), "rows_per_s", ">=", 1e6, None),
    ("W2-ray", "W2 >= 30x Ray Data", "W2", ("default",), ("torchray",), "vs_ray", ">=", 30, None),
    ("W3-uint8", "W3 uint8 >= 3x DataLoader", "W3", ("uint8",), ("torchray",), "vs_dataloader", ">=", 3, None),
    ("W3-float", "W3 float (user's torchvision transform) >= 1.0x DataLoader", "W3", ("float",), ("torchray",),
     "vs_dataloader", ">=", 1.0, None),
    ("W4-dataloader", "W4 >= 1.5x DataLoader", "W4", ("default",), ("loader", "torchray"), "vs_dataloader", ">=",
     1.5, None),
    ("W4-ray", "W4 >= 3x Ray Data", "W4", ("default",), ("loader", "torchray"), "vs_ray", ">=", 3, None),
    ("W5-memory", "W5 peak memory (PSS of the process tree) <= budget + 500 MB", "W5", ("default",), ("torchray",),
     "pss_over_budget_mb", "<=", 500, None),
    ("TTFB", "time to first batch after imports <= 0.5 s at num_workers=2", "*", ("*",), ("torchray", "loader"),
     "ttfb_s", "<=", 0.5, 2),
    ("I4-images", "issue 4: RayStyleLoader >= 1.0x DataLoader on the image dataset", "W3", ("uint8", "float"),
     ("loader",), "vs_dataloader", ">=", 1.0, None),
    ("W7-tabular", "GPU: W1 delivered to the GPU >= 20x DataLoader(pin_memory=True)", "W7", ("tabular",),
     ("torchray",), "vs_dataloader", ">=", 20, None),
    ("W7-images", "GPU: W3 uint8 delivered to the GPU >= 2x DataLoader(pin_memory=True)", "W7",
     ("images", "images_gpu_decode"),
     ("torchray",), "vs_dataloader", ">=", 2, None),
]
#: The page of a run on a machine with CUDA (W7), written beside the main page by
#: ``python -m benchmarks report RESULTS --docs --docs-name performance-gpu``.
GPU_PAGE = "performance-gpu"
TTFB_WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


# ------------------------------------------------------------------------------------ environment


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cuda_device() -> str | None:
    """The GPU's name, without importing torch in the parent process (seconds on a busy machine)."""
    import shutil
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return torch.cuda.get_device_name() if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            return None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0].split(":", 1)[1].split("(")[0].strip() if out.strip() else None
        except (OSError, subprocess.SubprocessError, IndexError):
            return None
    return None


def machine_info() -> dict[str, Any]:
    import psutil

    cuda = _cuda_device()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cuda": cuda,
        "versions": {d: _version(d) for d in ("torch", "torchvision", "numpy", "pyarrow", "pillow", "simplejpeg", "ray")},
    }


def pieces() -> dict[str, Any]:
    """Which parts of torchray_loader (and optional libraries) existed for this run."""
    out: dict[str, Any] = {}
    try:
        import torchray_loader as rd
    except Exception as exc:  # noqa: BLE001
        return {"torchray_loader": f"does not import: {exc}"}
    for name in ("read_parquet", "read_images", "from_torch", "RayStyleLoader", "ActorPoolStrategy"):
        try:
            getattr(rd, name)
            out[name] = True
        except (AttributeError, ImportError):
            out[name] = False
    out["process_pool"] = importlib.util.find_spec("torchray_loader.execution.process_pool") is not None
    out["ray"] = _version("ray") is not None
    status = _git("status", "--porcelain", "--", "torchray_loader")
    out["commit"] = _git("rev-parse", "--short", "HEAD") + ("+uncommitted changes" if status else "")
    return out


# ------------------------------------------------------------------------------------ summarising


def summarize(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (workload, variant, impl, num_workers) and the ratio columns."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["workload"], r["variant"], r["impl"], r["num_workers"]), []).append(r)
    rows = []
    for (wid, variant, impl, nw), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        row: dict[str, Any] = {"workload": wid, "variant": variant, "impl": impl, "num_workers": nw,
                               "runs": len(ok), "attempts": len(rs)}
        notes = sorted({n for r in rs for n in r.get("notes", [])})
        if ok:
            row["status"], row["reason"] = "ok", ""
            if len(ok) < len(rs):
                bad = next(r for r in rs if r["status"] != "ok")
                notes.append(f"{len(rs) - len(ok)} of {len(rs)} runs failed: {bad['reason'][:120]}")
            for key in ("rows_per_s", "ttfb_s", "peak_rss_mb", "peak_pss_mb", "base_rss_mb", "cold_rows_per_s", "epoch_s"):
                row[key] = median(r.get(key) for r in ok)
            row["rows"] = ok[0]["rows"]
            row["rows_per_s_runs"] = [r["rows_per_s"] for r in ok]
            extra: dict[str, Any] = {}
            for k, v in ok[0].get("extra", {}).items():
                if k == "traceback":
                    continue
                vals = [r.get("extra", {}).get(k) for r in ok]
                extra[k] = median(vals) if all(isinstance(x, (int, float)) for x in vals) else v
            row["extra"] = extra
        else:
            row["status"], row["reason"] = rs[0]["status"], rs[0]["reason"]
            for key in ("rows_per_s", "ttfb_s", "peak_rss_mb", "peak_pss_mb", "base_rss_mb", "cold_rows_per_s", "epoch_s"):
                row[key] = None
            row["rows"], row["rows_per_s_runs"], row["extra"] = 0, [], {}
        row["notes"] = notes
        rows.append(row)
    index = {(r["workload"], r["variant"], r["impl"], r["num_workers"]): r for r in rows}
    for r in rows:
        for ref, col in (("dataloader", "vs_dataloader"), ("ray", "vs_ray")):
            other = index.get((r["workload"], r["variant"], ref, r["num_workers"]))
            if r["rows_per_s"] and other and other["rows_per_s"]:
                r[col] = r["rows_per_s"] / other["rows_per_s"]
            else:
                r[col] = None
    order = {w: i for i, w in enumerate(MODULES)}
    rows.sort(key=lambda r: (order.get(r["workload"], 99), _variant_order(r["workload"], r["variant"]),
                             r["num_workers"], IMPL_ORDER.get(r["impl"], 9)))
    return rows


def _variant_order(wid: str, variant: str) -> int:
    try:
        return list(get_workload(wid).VARIANTS).index(variant)
    except (ValueError, ImportError):
        return 99


def _metric(row: dict[str, Any], metric: str) -> float | None:
    if metric in row:
        return row[metric]
    return row.get("extra", {}).get(metric)


def evaluate_targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tid, text, wid, variants, impls, metric, op, threshold, nw in TARGETS:
        for row in summary:
            if wid == "*":
                if row["workload"] not in TTFB_WORKLOADS:
                    continue
            elif row["workload"] != wid:
                continue
            if variants != ("*",) and row["variant"] not in variants:
                continue
            if row["impl"] not in impls or (nw is not None and row["num_workers"] != nw):
                continue
            value = _metric(row, metric) if row["status"] == "ok" else None
            passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
            out.append({
                "target": tid, "text": text, "workload": row["workload"], "variant": row["variant"],
                "impl": row["impl"], "num_workers": row["num_workers"], "metric": metric, "op": op,
                "threshold": threshold, "value": value, "passed": passed,
                "why_missing": "" if value is not None else (row["reason"] or "no comparison row"),
            })
    return out


def build_payload(results: list[Result], *, mode: str, command: str, elapsed_s: float, repeats: int,
                  processes: str, scale: float) -> dict[str, Any]:
    runs = [r.to_dict() for r in results]
    summary = summarize(runs)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "command": command,
        "elapsed_s": round(elapsed_s, 1),
        "repeats": repeats,
        "processes": processes,
        "scale": scale,
        "machine": machine_info(),
        "pieces": pieces(),
        "sizes": _sizes(mode == "quick", scale),
        "summary": summary,
        "targets": evaluate_targets(summary),
        "runs": runs,
    }


def _sizes(quick: bool, scale: float) -> dict[str, Any]:
    from dataclasses import asdict

    from .workloads.common import sizes

    return asdict(sizes(quick, scale))


def write_json(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------ formatting


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def fmt_num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _label(row: dict[str, Any]) -> str:
    return row["workload"] + ("" if row["variant"] == "default" else f"/{row['variant']}")


def _status_text(row: dict[str, Any]) -> str:
    parts = []
    if row["status"] != "ok":
        parts.append(f"{row['status']}: {row['reason']}")
    parts += row.get("notes", [])
    extra = row.get("extra", {})
    if "wait_fraction" in extra:
        parts.append(f"waits on data {extra['wait_fraction']:.0%} of the time")
    if row["workload"] == "W5" and row["status"] == "ok" and "budget_mb" in extra:
        parts.append(f"budget {extra['budget_mb']:.0f} MB, data {extra.get('dataset_mb', 0):.0f} MB")
    return "; ".join(parts)


def table_rows(payload: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in payload["summary"]:
        rows.append([
            _label(r), str(r["num_workers"]), IMPL_LABEL.get(r["impl"], r["impl"]), fmt_rate(r["rows_per_s"]),
            fmt_num(r["ttfb_s"], 3), fmt_num(r["peak_rss_mb"]), fmt_num(r["peak_pss_mb"]),
            fmt_ratio(r["vs_dataloader"]), fmt_ratio(r["vs_ray"]), _status_text(r),
        ])
    return rows


HEADER = ["workload", "nw", "implementation", "rows/s", "1st batch s", "peak RSS MB", "peak PSS MB", "x DataLoader",
          "x Ray", "notes"]


def print_table(payload: dict[str, Any]) -> None:
    rows = table_rows(payload)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADER[:-1])]
    print()
    print("  ".join(h.ljust(w) if i < 3 else h.rjust(w) for i, (h, w) in enumerate(zip(HEADER, widths, strict=False))) + "  notes")
    last = None
    for r in rows:
        if last is not None and r[0] != last:
            print()
        last = r[0]
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        note = r[-1]
        print("  ".join(cells) + ("  " + (note[:160] + "..." if len(note) > 160 else note) if note else ""))
    targets = payload.get("targets", [])
    if targets:
        print("\ntargets" + (" (quick mode: sizes too small to mean anything)" if payload["mode"] == "quick" else "") + ":")
        for t in targets:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
            value = _fmt_target_value(t)
            print(f"  {mark}  {t['text']} [{t['workload']}/{t['variant']} {IMPL_LABEL[t['impl']]} nw={t['num_workers']}]: "
                  f"{value}" + (f" ({t['why_missing'][:100]})" if t["passed"] is None else ""))


def _fmt_target_value(t: dict[str, Any]) -> str:
    v = t["value"]
    if v is None:
        return "-"
    if t["metric"].startswith("vs_"):
        return fmt_ratio(v)
    if t["metric"] == "rows_per_s":
        return fmt_rate(v) + " rows/s"
    if t["metric"] == "ttfb_s":
        return f"{v:.3f} s"
    return f"{v:.0f} MB"


# ------------------------------------------------------------------------------------ plot


def plot(payload: dict[str, Any], path: Path) -> bool:
    """Bar charts of the speed-ups of torchray (Dataset API and RayStyleLoader) over DataLoader and
    over Ray Data, per workload and num_workers (log scale). False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = payload["summary"]
    groups = []
    for r in summary:
        key = (_label(r), r["num_workers"])
        if key not in groups and r["workload"] != "W5":
            groups.append(key)
    impls = ["torchray", "loader"]
    colors = {"torchray": "#1f77b4", "loader": "#ff7f0e", "dataloader": "#7f7f7f", "ray": "#2ca02c"}
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.8 * len(groups) + 2), 11), squeeze=False)
    index = {(_label(r), r["num_workers"], r["impl"]): r for r in summary}
    panels = (
        (axes[0][0], "vs_dataloader", impls, "speed-up over torch DataLoader (rows/s ratio, same num_workers)"),
        (axes[1][0], "vs_ray", impls, "speed-up over Ray Data (rows/s ratio, same num_workers)"),
        (axes[2][0], "ttfb_s", ["torchray", "loader", "dataloader", "ray"], "time to first batch after imports (s)"),
    )
    for ax, col, bar_impls, title in panels:
        width = 0.8 / len(bar_impls)
        top = 0.0
        for j, impl in enumerate(bar_impls):
            xs, ys = [], []
            for i, (label, nw) in enumerate(groups):
                row = index.get((label, nw, impl))
                if row and row.get(col):
                    xs.append(i + (j - (len(bar_impls) - 1) / 2) * width)
                    ys.append(row[col])
            if xs:
                top = max(top, *ys)
                bars = ax.bar(xs, ys, width, label=IMPL_LABEL[impl], color=colors[impl])
                for b, y in zip(bars, ys, strict=True):
                    text = f"{y:.2g}" if col == "ttfb_s" else fmt_ratio(y)
                    ax.annotate(text, (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                                fontsize=6 if len(bar_impls) > 2 else 7, xytext=(0, 2), textcoords="offset points")
        if col == "ttfb_s":
            ax.axhline(0.5, color="red", linewidth=0.8, linestyle="--", label="0.5 s target")
        else:
            ax.axhline(1.0, color="black", linewidth=0.8)
        if top > 0:
            ax.set_yscale("log")
            ax.set_ylim(top=top * 3)
            ax.legend(loc="upper right", fontsize=7, ncol=len(bar_impls) + 1)
        else:
            ax.text(0.5, 0.5, "no comparison available", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{label}\nnw={nw}" for label, nw in groups], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    m = payload["machine"]
    fig.suptitle(f"torchray_loader benchmarks ({payload['mode']}) - {m['cores']} cores, {m['cpu']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ docs


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(payload: dict[str, Any], png_name: str = "performance.png", *, title: str = "Performance",
             see_also: str | None = None) -> str:
    m, p = payload["machine"], payload["pieces"]
    missing = [k for k in ("read_parquet", "read_images", "from_torch", "RayStyleLoader", "process_pool")
               if p.get(k) is False]
    errors = [r for r in payload["summary"] if r["status"] != "ok"]
    preliminary = bool(missing) or payload["mode"] != "full"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        f"# {title}",
        "",
        "<!-- generated by `python -m benchmarks run`; edit benchmarks/report.py, not this file -->",
        "",
    ]
    if see_also:
        lines += [see_also, ""]
    if preliminary:
        why = []
        if missing:
            why.append("these pieces of the package were not built yet: " + ", ".join(f"`{x}`" for x in missing))
        if payload["mode"] != "full":
            why.append(f"this is a {payload['mode']} run")
        lines += [f"> **Preliminary numbers**: {'; '.join(why)}. Rerun the full suite to refresh this page.", ""]
    lines += [
        f"{'Latest full run' if payload['mode'] == 'full' else 'Run'} ({payload['mode']} mode): "
        f"{payload['created']}, {payload['elapsed_s'] / 60:.0f} min, package commit `{p.get('commit', '?')}`.",
        "",
        f"- **Machine**: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"{'GPU: ' + m['cuda'] if m.get('cuda') else 'no GPU'}; {m['os']}; Python {m['python']}.",
        f"- **Libraries**: {versions}.",
        f"- **Command**: `{payload['command']}` (from the repository root).",
        f"- **Method**: {payload['repeats']} alternating run(s) per configuration (torchray, RayStyleLoader, "
        f"DataLoader, Ray, torchray, ...), "
        f"{'each in a fresh process' if payload.get('processes') == 'run' else 'runs sharing processes'}; "
        "the table shows medians. The consumer loop reads one element of each batch.",
        "- *rows/s*: "
        + ("over a full warm epoch (a second iterator on the same pipeline object, after a warm-up epoch "
           "that stops after at most 5 s)."
           + (f" A timed epoch still running {payload['max_epoch_s']:g} s after its first batch stops there; "
              "rows/s is then over the rows it delivered and the time since the epoch began (the row says "
              "*partial epoch*)." if payload.get("max_epoch_s") else "")
           if payload["mode"] == "full" else
           "over the only epoch, start-up included (quick mode)."),
        "- *1st batch*: from just after the imports (pyarrow's one-time lazy import of pandas among them; "
        "the data already on disk or in memory) to the first "
        "batch: pipeline construction, worker start-up and `ray.init` included. Shuffled Arrow pipelines "
        "(torchray, Ray) fill a 10,000-row shuffle window first.",
        "- *peak RSS*: the largest sum of resident memory over the process and all its descendants, sampled "
        "every 0.1 s (pages shared by forked workers count once per process); *peak PSS* counts shared "
        "pages once (sampled every 0.5 s).",
        "- *x DataLoader*, *x Ray*: rows/s ratios at the same `num_workers`. Ray runs with "
        "`ray.init(num_cpus=max(1, num_workers))` (W6: at least 2, for its two actors).",
        "",
    ]
    for m_ in payload.get("merged", []):
        when = (f" on {m_['created']} at package commit `{m_.get('commit') or '?'}` with `{m_.get('command')}`"
                if m_.get("created") else "")
        lines.append(f"- **Re-measured later and merged in** (`python -m benchmarks report ... --out`){when}: "
                     f"{', '.join(m_['configurations'])}; these runs did not alternate with the others.")
    lines += [
        "",
        f"![speed-ups]({png_name})",
        "",
        "| workload | nw | implementation | rows/s | 1st batch s | peak RSS MB | peak PSS MB | x DataLoader | x Ray | notes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table_rows(payload):
        lines.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
    lines += ["", "## Targets", "", "| target | where | value | result |", "|---|---|---:|---|"]
    for t in payload["targets"]:
        res = {True: "pass", False: "**fail**", None: "n/a"}[t["passed"]]
        if t["passed"] is None and t["why_missing"]:
            res += f" ({_md_escape(t['why_missing'][:80])})"
        where = f"{t['workload']}/{t['variant']}, {IMPL_LABEL[t['impl']]}, nw={t['num_workers']}"
        lines.append(f"| {_md_escape(t['text'])} | {where} | {_fmt_target_value(t)} | {res} |")
    lines += ["", "## Workloads", ""]
    for wid in MODULES:
        mod = get_workload(wid)
        doc = (mod.__doc__ or "").strip()
        lines += [f"### {wid}: {mod.TITLE}", "", _doc_body(doc), ""]
    sizes = payload.get("sizes", {})
    lines += [
        "## Reproduce",
        "",
        "```",
        "pip install -e '.[images,ray]' matplotlib   # Ray Data's iter_torch_batches also needs pydantic",
        "python -m benchmarks run                    # full: ~all workloads, 3 alternating runs, rewrites this page",
        "python -m benchmarks run --quick            # CI smoke test (~2 min on 2 cores), no thresholds",
        "python -m benchmarks run --only W1,W3/float --repeats 5 --workers 0,2",
        "```",
        "",
        f"Data is generated locally (no downloads) and cached in `benchmarks/results/data` "
        f"(or `$TORCHRAY_BENCH_DATA`). Sizes of this run: `{json.dumps(sizes)}`. "
        "Raw per-run numbers are in [performance.json](performance.json).",
        "",
    ]
    if errors:
        lines += ["## Rows without numbers", ""]
        for r in errors:
            lines.append(f"- {_label(r)} {IMPL_LABEL.get(r['impl'], r['impl'])} nw={r['num_workers']}: "
                         f"{r['status']}: {_md_escape(r['reason'][:300])}")
        lines.append("")
    return "\n".join(lines)


def _doc_body(doc: str) -> str:
    parts = doc.split("\n", 1)
    return parts[1].strip() if len(parts) > 1 else ""


def write_docs(payload: dict[str, Any], docs_dir: Path, stem: str = "performance") -> list[Path]:
    """``{stem}.md``, ``{stem}.json`` and ``{stem}.png`` in ``docs_dir``. The main page links to the GPU
    page (``GPU_PAGE``) when that exists."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    md = docs_dir / f"{stem}.md"
    png = docs_dir / f"{stem}.png"
    if stem == GPU_PAGE:
        text = markdown(payload, png.name, title="Performance on a GPU machine",
                        see_also="The GPU feed workload (W7) needs CUDA, so it is measured on a machine with a GPU; "
                                 "the other workloads are on the [main page](performance.md).")
    else:
        see_also = None
        if (docs_dir / f"{GPU_PAGE}.md").exists():
            see_also = (f"The GPU feed workload (W7) is measured on a machine with a GPU: see "
                        f"[{GPU_PAGE}.md]({GPU_PAGE}.md).")
        text = markdown(payload, png.name, see_also=see_also)
    md.write_text(text)
    js = docs_dir / f"{stem}.json"
    slim = dict(payload)
    slim["runs"] = [{**r, "extra": {k: v for k, v in r.get("extra", {}).items() if k != "traceback"}}
                    for r in payload["runs"]]
    write_json(slim, js)
    written = [md, js]
    if plot(payload, png):
        written.append(png)
    return written
