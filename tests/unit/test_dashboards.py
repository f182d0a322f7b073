"""The wall as code: fixed uids, deterministic JSON, vi/en titles, SDK round trip, golden files.

Golden files: ``tests/golden/dashboards/<uid>.<lang>.json``. After an intended change, regenerate
them with ``IOC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_dashboards.py -q`` and review the
diff; the same run also checks that ``deploy/grafana`` was rebuilt (``ioc dashboards build``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dashboards import air_noise, flood, health, overview, traffic
from dashboards.check import panel_queries, timescaledb_queries, variable_queries
from dashboards.common import (
    DATASOURCE_UID,
    TIERS,
    SqlAnnotationTarget,
    SqlQuery,
    dashboard_from_json,
    dumps,
    to_json,
)
from dashboards.macros import MacroContext, Variable, expand, variable_names
from dashboards.main import DASHBOARDS, HOME_UID, provisioning_files, render, write
from detectors.noise import QCVN26_2010_LIMITS
from detectors.vn_aqi import CATEGORIES
from ioc.composition.cli import cli

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "dashboards"
UIDS = ["ioc-overview", "ioc-traffic", "ioc-air-noise", "ioc-flood", "ioc-pipeline-health"]
LANGS = ("vi", "en")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, dict[str, Any]]]:
    return {lang: render(lang) for lang in LANGS}  # type: ignore[arg-type]


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return list(d["panels"])


def test_uids_are_fixed_and_in_wall_order(rendered: dict[str, dict[str, dict[str, Any]]]) -> None:
    for lang in LANGS:
        assert list(rendered[lang]) == UIDS
        assert [d["uid"] for d in rendered[lang].values()] == UIDS
    assert [s.uid for s in DASHBOARDS] == UIDS and HOME_UID == "ioc-overview"
    assert (overview.UID, traffic.UID, air_noise.UID, flood.UID, health.UID) == tuple(UIDS)


def test_json_is_deterministic_across_builds_and_writes(tmp_path: Path) -> None:
    a, b = render("vi"), render("vi")
    assert {u: dumps(d) for u, d in a.items()} == {u: dumps(d) for u, d in b.items()}
    files_a = write(tmp_path / "a", "vi")
    files_b = write(tmp_path / "b", "vi")
    assert [p.relative_to(tmp_path / "a") for p in files_a] == [p.relative_to(tmp_path / "b") for p in files_b]
    for pa, pb in zip(files_a, files_b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    text = (tmp_path / "a" / "dashboards" / "ioc-overview.json").read_text(encoding="utf-8")
    assert "Tổng quan" in text  # UTF-8 kept, not \\u escapes


def test_titles_are_vietnamese_by_default_and_english_on_request(
    rendered: dict[str, dict[str, dict[str, Any]]],
) -> None:
    vi = {u: d["title"] for u, d in rendered["vi"].items()}
    en = {u: d["title"] for u, d in rendered["en"].items()}
    assert vi == {"ioc-overview": "Tổng quan", "ioc-traffic": "Giao thông", "ioc-air-noise": "Không khí & tiếng ồn",
                  "ioc-flood": "Lũ lụt", "ioc-pipeline-health": "Sức khỏe hệ thống"}
    assert en == {"ioc-overview": "Overview", "ioc-traffic": "Traffic", "ioc-air-noise": "Air and noise",
                  "ioc-flood": "Flood", "ioc-pipeline-health": "Pipeline health"}
    vietnamese = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.IGNORECASE)
    for uid in UIDS:
        pv, pe = _panels(rendered["vi"][uid]), _panels(rendered["en"][uid])
        assert [p["id"] for p in pv] == [p["id"] for p in pe]
        for a, b in zip(pv, pe, strict=True):
            assert a["title"] != b["title"]
            assert not vietnamese.search(b["title"]), b["title"]
        assert any(vietnamese.search(p["title"]) for p in pv)


def test_ioc_lang_picks_the_language_of_the_build(tmp_path: Path) -> None:
    runner = CliRunner()
    for lang, title in (("en", "Overview"), ("vi", "Tổng quan")):
        out = tmp_path / lang
        res = runner.invoke(cli, ["dashboards", "build", "--out", str(out)], env={"IOC_LANG": lang})
        assert res.exit_code == 0, res.output
        assert f'"title": "{title}"' in (out / "dashboards" / "ioc-overview.json").read_text(encoding="utf-8")
    res = runner.invoke(cli, ["dashboards", "build", "--out", str(tmp_path / "x")], env={"IOC_LANG": "fr"})
    assert res.exit_code != 0


@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_through_the_sdk_models(lang: str, rendered: dict[str, dict[str, dict[str, Any]]]) -> None:
    for uid, data in rendered[lang].items():
        model = dashboard_from_json(data)
        assert to_json(model) == data, uid
        targets = [t for p in model.panels or [] for t in (getattr(p, "targets", None) or [])]
        assert targets and all(isinstance(t, SqlQuery) for t in targets), uid
        anns = model.annotations.list_val if model.annotations else []
        assert any(isinstance(a.target, SqlAnnotationTarget) for a in anns or []), uid


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("uid", UIDS)
def test_golden_files(lang: str, uid: str, rendered: dict[str, dict[str, dict[str, Any]]]) -> None:
    path = GOLDEN / f"{uid}.{lang}.json"
    text = dumps(rendered[lang][uid])
    if os.environ.get("IOC_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; regenerate with IOC_UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text, (
        f"{uid} ({lang}) changed; if intended, regenerate with IOC_UPDATE_GOLDEN=1 and review the diff"
    )


def test_committed_provisioning_is_the_build_output(tmp_path: Path) -> None:
    """deploy/grafana is generated; a stale copy would provision an old wall."""
    write(tmp_path, "vi")
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    deploy = ROOT / "deploy" / "grafana"
    if os.environ.get("IOC_UPDATE_GOLDEN") == "1":
        write(deploy, "vi")
    for rel in built:
        assert (deploy / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"deploy/grafana/{rel} is stale"


def test_every_query_uses_only_defined_variables_and_never_quotes_them(
    rendered: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for d in rendered["vi"].values():
        defined = {v["name"] for v in d["templating"]["list"]}
        assert {"district", "kind", "sensor"} <= defined
        queries = panel_queries(d) + variable_queries(d)
        assert queries
        for q in queries:
            assert variable_names(q.sql) <= defined, (q.key, variable_names(q.sql) - defined)
            # Grafana quotes SQL variable values itself: a quoted '$x' would compare to a quoted list
            assert not re.search(r"['\"]\$\{?\w", q.sql), q.key
            if q.kind == "panel" and q.dashboard_uid != health.UID and "pipeline_metrics" not in q.sql:
                assert "$sensor" in q.sql or "$gauge" in q.sql, f"{q.key} ignores the sensor variable"


def test_every_panel_reads_the_provisioned_datasource(rendered: dict[str, dict[str, dict[str, Any]]]) -> None:
    for d in rendered["vi"].values():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            assert p["datasource"]["uid"] == DATASOURCE_UID
            assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p["targets"]:
                assert t["datasource"]["uid"] == DATASOURCE_UID and t["rawQuery"] is True
        names = [a["name"] for a in d["annotations"]["list"]]
        assert names[-1] in ("Cảnh báo", "Alerts")


def test_roll_up_tiers_are_contiguous_and_every_series_query_has_all_four(
    rendered: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for lower, upper in zip(TIERS, TIERS[1:], strict=False):
        assert lower.max_span == upper.min_span
    assert TIERS[0].min_span is None and TIERS[-1].max_span is None
    tiered = [q for d in rendered["vi"].values() for q in panel_queries(d) if "UNION ALL" in q.sql and "r.ts" in q.sql]
    assert len(tiered) == 7  # speed, congestion, PM, gases, noise, water level, rain
    for q in tiered:
        for table in ("FROM readings r", "FROM readings_1m r", "FROM readings_1h r", "FROM readings_1d r"):
            assert table in q.sql, (q.key, table)


def test_air_dashboard_uses_the_official_aqi_colours_and_noise_limits(
    rendered: dict[str, dict[str, dict[str, Any]]],
) -> None:
    air = rendered["vi"][air_noise.UID]
    aqi_panel = next(p for p in air["panels"] if p["id"] == 1)
    steps = aqi_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in steps] == ["#00E400", "#FFFF00", "#FF7E00", "#FF0000", "#8F3F97", "#7E0023"]
    assert [s["value"] for s in steps] == [None, 51, 101, 151, 201, 301]
    assert [c.hex for c in CATEGORIES] == [s["color"] for s in steps]
    limits_sql = next(t["rawSql"] for p in air["panels"] for t in p["targets"] if t["refId"] == "B")
    for day, night in QCVN26_2010_LIMITS.values():
        assert f"THEN {day} ELSE {night} END" in limits_sql
    now_sql = next(p for p in air["panels"] if p["id"] == 2)["targets"][0]["rawSql"]
    assert "Tốt" in now_sql and "Nguy hại" in now_sql
    assert "Good" in next(p for p in rendered["en"][air_noise.UID]["panels"] if p["id"] == 2)["targets"][0]["rawSql"]


def test_flood_levels_repeat_per_gauge_with_registry_alarm_lines(
    rendered: dict[str, dict[str, dict[str, Any]]],
) -> None:
    fl = rendered["vi"][flood.UID]
    level = next(p for p in fl["panels"] if p["id"] == 1)
    assert level["repeat"] == "gauge"
    lines = level["targets"][1]["rawSql"]
    assert "alarm_levels->>l.key" in lines and "('bd1', 'I'), ('bd2', 'II'), ('bd3', 'III')" in lines
    crossings = next(p for p in fl["panels"] if p["id"] == 4)["targets"][0]["rawSql"]
    assert "predicted_crossing_at" in crossings and "lead_time_s" in crossings


def test_timescaledb_only_queries_are_the_time_group_ones(rendered: dict[str, dict[str, dict[str, Any]]]) -> None:
    needs = timescaledb_queries(rendered["vi"])
    assert needs and all("$__timeGroup" in q.sql for q in needs)
    from datetime import UTC, datetime, timedelta

    end = datetime(2025, 12, 4, tzinfo=UTC)
    vars_ = {n: Variable(("x",)) for n in ("district", "kind", "sensor", "gauge")}
    on = MacroContext(end - timedelta(hours=1), end, timedelta(seconds=10), vars_, timescaledb=True)
    off = MacroContext(end - timedelta(hours=1), end, timedelta(seconds=10), vars_, timescaledb=False)
    for q in needs:
        assert "time_bucket('10s'," in expand(q.sql, on)
        assert "time_bucket" not in expand(q.sql, off)


def test_provisioning_has_timescaledb_option_no_secrets_and_a_kiosk_home() -> None:
    files = provisioning_files("vi")
    ds = files["provisioning/datasources/ioc.yaml"]
    assert "timescaledb: true" in ds and 'password: "${GRAFANA_DB_PASSWORD}"' in ds
    assert f'uid: "{DATASOURCE_UID}"' in ds
    prov = files["provisioning/dashboards/ioc.yaml"]
    assert 'folderUid: "khanhhoa-ioc"' in prov and "allowUiUpdates: false" in prov
    ini = files["grafana.ini"]
    assert "[auth.anonymous]" in ini and "org_role = Viewer" in ini
    assert f"/{HOME_UID}.json" in ini and "?kiosk&refresh=30s" in ini
    assert "timescaledb: false" in provisioning_files("vi", timescaledb=False)["provisioning/datasources/ioc.yaml"]
