"""Results out: the terminal table, the JSON files and the PNG chart."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .model import FAILED, NOT_APPLICABLE, OK, MetricSpec, Outcome
from .systems import DISPLAY
from .workloads import SPECS

MAX_CELL = 40
COLORS = {"brokerd": "#2a7ab9", "rabbitmq": "#f28c28", "redis": "#c0392b"}


def format_value(value: float, unit: str) -> str:
    if unit in ("msg/s", "tasks/s"):
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.0f} ms" if value >= 100 else f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    return f"{value:g} {unit}"


def status_text(o: Outcome) -> str:
    if o.status == NOT_APPLICABLE:
        return f"n/a ({o.note})" if o.note else "n/a"
    return f"{o.status}: {o.note}" if o.note else o.status


def describe_outcome(o: Outcome) -> str:
    if o.status != OK:
        return status_text(o)
    spec = SPECS[o.workload]
    return ", ".join(
        f"{m.label.split(' ', 1)[1]}: {format_value(o.values[m.key], m.unit)}"
        for m in spec.metrics
        if m.key in o.values
    )


def ratio(brokerd: float, peer: float, metric: MetricSpec) -> float | None:
    """How many times better brokerd is than the peer (>1: brokerd better)."""
    if brokerd <= 0 or peer <= 0:
        return None
    return brokerd / peer if metric.higher_is_better else peer / brokerd


def build_rows(
    outcomes: Sequence[Outcome], systems: Sequence[str]
) -> tuple[list[list[str]], list[str], list[dict[str, Any]]]:
    """Table rows (strings), footnotes, and the same rows as data for the JSON file."""
    by_key = {(o.workload, o.system): o for o in outcomes}
    workloads = list(dict.fromkeys(o.workload for o in outcomes))
    rows: list[list[str]] = []
    notes: list[str] = []
    data: list[dict[str, Any]] = []
    noted: dict[tuple[str, str], int] = {}
    for wl in workloads:
        spec = SPECS[wl]
        for metric in spec.metrics:
            row = [f"{metric.label} ({metric.unit})"]
            record: dict[str, Any] = {
                "workload": wl,
                "metric": metric.key,
                "label": metric.label,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "values": {},
                "ratios": {},
            }
            for system in systems:
                o = by_key.get((wl, system))
                if o is None:
                    row.append("-")
                    continue
                if o.status == OK and metric.key in o.values:
                    row.append(format_value(o.values[metric.key], metric.unit))
                    record["values"][system] = o.values[metric.key]
                    continue
                record["values"][system] = None
                text = status_text(o)
                if len(text) <= MAX_CELL and o.status != FAILED:
                    row.append(text)
                    continue
                key = (wl, system)
                if key not in noted:
                    notes.append(f"{DISPLAY[system]} {wl}: {text}")
                    noted[key] = len(notes)
                row.append(f"{o.status} [{noted[key]}]")
            b = by_key.get((wl, "brokerd"))
            parts = []
            for system in systems:
                if system == "brokerd":
                    continue
                p = by_key.get((wl, system))
                if (
                    b is not None
                    and p is not None
                    and b.status == OK
                    and p.status == OK
                    and metric.key in b.values
                    and metric.key in p.values
                ):
                    r = ratio(b.values[metric.key], p.values[metric.key], metric)
                    if r is not None:
                        parts.append(f"{r:.1f}x {DISPLAY[system]}")
                        record["ratios"][system] = round(r, 3)
            if "brokerd" in systems and len(systems) > 1:
                row.append(", ".join(parts) or "-")
            rows.append(row)
            data.append(record)
    return rows, notes, data


def render_table(outcomes: Sequence[Outcome], systems: Sequence[str]) -> str:
    rows, notes, _ = build_rows(outcomes, systems)
    header = ["workload (unit)"] + [DISPLAY[s] for s in systems]
    if "brokerd" in systems and len(systems) > 1:
        header.append("brokerd is N x better than")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    sep = "  "
    lines = [sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append(sep.join("-" * w for w in widths))
    has_ratio = len(header) > len(systems) + 1
    for r in rows:
        values = r[1:-1] if has_ratio else r[1:]
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(values, widths[1:], strict=False)]
        if has_ratio:
            cells.append(r[-1].ljust(widths[-1]))
        lines.append(sep.join(cells).rstrip())
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines)


def write_json(
    out_dir: Path,
    outcomes: Sequence[Outcome],
    systems: Sequence[str],
    meta: dict[str, Any],
    started: datetime,
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    _, notes, table = build_rows(outcomes, systems)
    doc = {
        "system_notes": system_notes(meta),
        "warnings": run_warnings(outcomes),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "meta": meta,
        "table": table,
        "notes": notes,
        "results": [o.as_json() for o in outcomes],
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    stamped = out_dir / f"results-{stamp}.json"
    stamped.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    latest = out_dir / "latest.json"
    shutil.copyfile(stamped, latest)
    return latest, stamped


def write_chart(
    out_dir: Path, outcomes: Sequence[Outcome], systems: Sequence[str], started: datetime
) -> Path | None:
    """Bar charts, one panel per metric. Returns None (after saying why) when matplotlib
    is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib not installed; skipping the PNG chart", file=sys.stderr)
        return None
    _, _, table = build_rows(outcomes, systems)
    panels = [r for r in table if any(v is not None for v in r["values"].values())]
    if not panels:
        print("note: no successful results to chart", file=sys.stderr)
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel["unit"]
        scale, shown_unit = (2**20, "MiB") if unit == "bytes" else (1.0, unit)
        names, values, colors = [], [], []
        for system in systems:
            v = panel["values"].get(system)
            if v is not None:
                names.append(DISPLAY[system])
                values.append(v / scale)
                colors.append(COLORS.get(system, "#777777"))
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=8)
        better = "higher" if panel["higher_is_better"] else "lower"
        ax.set_title(f"{panel['label']}\n({shown_unit}, {better} is better)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle(f"brokerd benchmark {started.strftime('%Y-%m-%d %H:%M UTC')}", fontsize=11)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamped = out_dir / f"results-{started.strftime('%Y%m%d-%H%M%S')}.png"
    fig.savefig(stamped, dpi=110)
    plt.close(fig)
    shutil.copyfile(stamped, out_dir / "latest.png")
    return out_dir / "latest.png"


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def system_notes(meta: dict[str, Any]) -> list[str]:
    """One line per peer on settings that matter when reading its figures."""
    notes: list[str] = []
    systems = meta.get("systems", {})
    redis = systems.get("redis", {})
    durability = redis.get("durability", {})
    if durability:
        aof, fsync = durability.get("appendonly", "?"), durability.get("appendfsync", "?")
        if aof == "no":
            detail = "an LPUSH reply is not a durable write (no AOF)"
        elif fsync != "always":
            detail = f"AOF fsync {fsync}: up to about a second of confirmed writes can be lost"
        else:
            detail = "AOF with fsync always"
        notes.append(
            f"Redis {redis.get('version', '')}: appendonly={aof}, appendfsync={fsync}; {detail}"
        )
    rabbit = systems.get("rabbitmq", {})
    if rabbit.get("version"):
        notes.append(
            f"RabbitMQ {rabbit['version']} via {rabbit.get('client', 'aiormq')}: "
            f"{rabbit.get('queue', '')}"
        )
    brokerd = systems.get("brokerd", {})
    if brokerd.get("ack"):
        notes.append(f"brokerd consumers: {brokerd['ack']}")
    if brokerd.get("error"):
        notes.append(f"brokerd: {brokerd['error']}")
    return notes


LAG_WARN_MS = 5.0


def run_warnings(outcomes: Sequence[Outcome]) -> list[str]:
    """Signs that a figure says more about the machine than about the system."""
    out: list[str] = []
    for o in outcomes:
        lag = o.details.get("send_lag_max_ms") if o.status == OK else None
        if lag is not None and lag > LAG_WARN_MS:
            out.append(
                f"{o.workload} {DISPLAY[o.system]}: the producer itself ran up to {lag:,.0f} ms "
                "behind its schedule (busy machine?); tail latencies include that"
            )
    return out
