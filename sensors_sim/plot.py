"""Draw a run's key series with its labelled events shaded and the BĐ alarm lines on gauges."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sensors_sim.engine import SensorSeries, Simulation

KEY_GAUGES = ("HYD_DONG_TRANG", "HYD_NINH_HOA", "HYD_DIEN_PHU")
LEVEL_STYLE = {"bd1": ("#e6b800", "BĐ I"), "bd2": ("#ff7e00", "BĐ II"), "bd3": ("#d00000", "BĐ III")}
SHADE = {"flood": "#4a90d9", "heavy_rain": "#7fb3e6", "storm_wind": "#9b9b9b", "traffic_incident": "#ff7e00",
         "pollution_episode": "#8f3f97", "sensor_fault": "#d00000", "malformed": "#cccccc"}


def _dates(s: SensorSeries) -> np.ndarray:
    return np.array([datetime.fromtimestamp(int(x), UTC) for x in s.t])


def plot(sim: Simulation, out: Path) -> Path:
    """Render up to five panels (rivers, rain, wind, traffic, air) that have data in this run."""
    by_kind: dict[str, list[SensorSeries]] = {}
    for s in sim.series:
        by_kind.setdefault(s.spec.kind, []).append(s)
    gauges = [s for s in by_kind.get("water_level", []) if s.spec.alarm_levels]
    gauges.sort(key=lambda s: (KEY_GAUGES.index(s.spec.sensor_id) if s.spec.sensor_id in KEY_GAUGES else 99, s.spec.sensor_id))
    panels: list[tuple[str, SensorSeries | None]] = []
    if gauges:
        panels += [("river", g) for g in gauges[:2]]
    for kind in ("rain", "weather", "traffic", "air"):
        if kind in by_kind:
            panels.append((kind, None))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (kind, gauge) in zip(axes[:, 0], panels, strict=True):
        if kind == "river" and gauge is not None:
            ax.plot(_dates(gauge), gauge.values["water_level_m"], color="#1f4e99", lw=1.2)
            for key, level in (gauge.spec.alarm_levels or {}).items():
                if level is not None:
                    color, name = LEVEL_STYLE[key]
                    ax.axhline(level, color=color, ls="--", lw=1)
                    ax.annotate(f"{name} {level:g} m", xy=(1.0, level), xycoords=("axes fraction", "data"),
                                xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=color)
            ax.set_ylabel("m")
            ax.set_title(f"{gauge.spec.sensor_id} — {gauge.spec.name}", fontsize=9, loc="left")
        elif kind == "rain":
            for s in by_kind["rain"][:4]:
                hourly = np.convolve(s.values["rain_mm"], np.ones(max(1, 3600 // s.spec.interval_s)), "same")
                ax.plot(_dates(s), hourly, lw=0.9, label=s.spec.sensor_id)
            ax.set_ylabel("mm/h")
            ax.set_title("rain (rolling 1 h)", fontsize=9, loc="left")
        elif kind == "weather":
            for s in by_kind["weather"][:3]:
                ax.plot(_dates(s), s.values["wind_speed_ms"], lw=0.8, label=s.spec.sensor_id)
            ax.set_ylabel("m/s")
            ax.set_title("wind speed", fontsize=9, loc="left")
        elif kind == "traffic":
            for s in by_kind["traffic"][:3]:
                ax.plot(_dates(s), s.values["speed_kmh"], lw=0.6, label=s.spec.sensor_id)
            ax.set_ylabel("km/h")
            ax.set_title("traffic speed", fontsize=9, loc="left")
        elif kind == "air":
            for s in by_kind["air"][:3]:
                if "pm25" in s.values:
                    ax.plot(_dates(s), s.values["pm25"], lw=0.8, label=s.spec.sensor_id)
            ax.set_ylabel("µg/m³")
            ax.set_title("PM2.5", fontsize=9, loc="left")
        if kind != "river":
            ax.legend(fontsize=7, loc="upper left", ncol=4)
        shown = {s.spec.sensor_id for s in (by_kind.get(kind, []) if gauge is None else [gauge])}
        for lab in sim.labels:
            if lab["kind"] == "malformed" or not shown.intersection(lab["sensors"]):
                continue
            ax.axvspan(datetime.fromtimestamp(lab["start"], UTC), datetime.fromtimestamp(lab["end"], UTC),
                       color=SHADE.get(lab["kind"], "#dddddd"), alpha=0.12, lw=0)
            for crossing in lab.get("crossings", {}).values():
                for key, ts in crossing.items():
                    ax.axvline(datetime.fromtimestamp(ts, UTC), color=LEVEL_STYLE[key][0], lw=0.8, alpha=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{sim.scenario.name} (seed {sim.seed}) — {sim.scenario.description}", fontsize=10)
    axes[-1, 0].set_xlabel("UTC")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
