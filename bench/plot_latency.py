"""Latency against offered rate, from ``sustained.json``, with the raw limits of ``raw.json``.

Points: sensor → row visible p50 and p99 of every sustained-rate search step (one series per sensor
cadence; hollow markers for steps that failed) and of the latency phases, and sensor → alert on MQTT
p50 / p99 where the phases measured it. Vertical lines: the slowest raw hop (solid) and the other
pipeline hops of raw.json within reach of the plot (dotted), and the sustained rate per cadence
(dashed). Horizontal line: the drain bound a step must meet (2 s).

Writes ``bench/results/latency.png``; missing inputs give no figure and a message, not an error.

    .venv/bin/python bench/plot_latency.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS_DIR
from harness import _load as load_result

#: raw.json hops that bound the pipeline (the others are reference figures: QoS 0, one-transaction COPY…)
PIPELINE_HOPS = ("mqtt_qos1", "kafka_produce", "kafka_consume", "faust_agent", "pg_copy")


def _q(block: dict[str, Any] | None, key: str) -> float | None:
    if not block or not block.get("n"):
        return None
    v = block.get(key)
    return float(v) if isinstance(v, int | float) else None


def plot(out_dir: Path = RESULTS_DIR) -> Path | None:
    """Draw ``latency.png`` from ``out_dir``'s sustained.json and raw.json; None when there is no data."""
    sus = load_result(out_dir, "sustained")
    if not sus:
        return None
    raw = load_result(out_dir, "raw") or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 6), dpi=110)
    rates: list[float] = []
    colours = {"10s": "tab:blue", "10Hz": "tab:orange"}
    for code, c in sus.get("cadences", {}).items():
        colour = colours.get(code, "tab:purple")
        steps = sorted(c.get("steps", []), key=lambda s: s["offered_rate"])
        for pct, marker, style in (("p50", "o", ":"), ("p99", "^", "-")):
            pts = [(float(s["offered_rate"]), y, bool(s.get("passed"))) for s in steps
                   if (y := _q(s.get("row_latency_ms"), pct)) is not None]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, color=colour, alpha=0.7,
                    label=f"row {pct}, search steps, {code} cadence")
            failed = [(x, y) for x, y, ok in pts if not ok]
            if failed:  # hollow: the step failed
                ax.plot([f[0] for f in failed], [f[1] for f in failed], marker, color=colour, markerfacecolor="white",
                        markersize=7, linestyle="none")
            rates += [p[0] for p in pts]
        if c.get("sustained_rate"):
            ax.axvline(c["sustained_rate"], color=colour, linestyle="--", linewidth=1,
                       label=f"sustained rate, {code} cadence: {c['sustained_rate']:,.0f}/s")
    phases = sorted(((float(r), p) for r, p in sus.get("latency", {}).items()), key=lambda rp: rp[0])
    cadence = sus.get("latency_cadence", "10s")
    for what, key, colour in (("row", "row_latency_ms", "tab:green"), ("alert", "alert_latency_ms", "tab:red")):
        for pct, marker, style in (("p50", "s", ":"), ("p99", "D", "-")):
            xy = [(r, y) for r, p in phases if (y := _q(p.get(key), pct)) is not None]
            if xy:
                ax.plot([p[0] for p in xy], [p[1] for p in xy], style, marker=marker, color=colour,
                        label=f"{what} {pct}, latency phases ({cadence} cadence)")
                rates += [p[0] for p in xy]
    if not rates:
        plt.close(fig)
        return None
    hops = raw.get("hops", {})
    slow = raw.get("slowest_hop") or {}
    lo, hi = min(rates) / 1.5, max(rates) * 1.5
    if slow.get("readings_per_s"):
        hi = max(hi, float(slow["readings_per_s"]) * 1.3)
        ax.axvline(float(slow["readings_per_s"]), color="black", linewidth=1.5,
                   label=f"slowest raw hop: {slow.get('name')} {float(slow['readings_per_s']):,.0f}/s")
    for name in PIPELINE_HOPS:
        r = hops.get(name, {}).get("readings_per_s")
        if r and name != slow.get("name") and r <= hi * 3:
            hi = max(hi, float(r) * 1.3)
            ax.axvline(float(r), color="grey", linestyle=":", linewidth=1, label=f"raw hop {name}: {float(r):,.0f}/s")
    bound_ms = float(sus.get("drain_bound_s", 2.0)) * 1000.0
    ax.axhline(bound_ms, color="grey", linestyle="-.", linewidth=1, label=f"drain bound {bound_ms / 1000:g} s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("offered rate, readings/s")
    ax.set_ylabel("latency, ms (sensor → row visible / alert on MQTT)")
    quick = " (quick run)" if sus.get("quick") else ""
    ax.set_title(f"Latency against offered rate, hold {sus.get('hold_s', 0):g} s{quick}; "
                 f"{(sus.get('host') or {}).get('cpus', '?')} CPUs, {sus.get('started_at', '')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "latency.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where sustained.json and raw.json are, and the PNG goes")
    args = ap.parse_args()
    path = plot(args.out)
    print(f"wrote {path}" if path else f"no sustained.json with latency figures in {args.out}: no plot")


if __name__ == "__main__":
    main()
