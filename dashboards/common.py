"""Defaults shared by every dashboard, and the typed SQL query the SDK lacks.

grafana-foundation-sdk has builders for Prometheus, Loki, ... but none for Grafana's SQL data
sources, so :class:`SqlQuery` (a ``Dataquery`` variant: ``rawSql`` + ``format``) and
:class:`SqlAnnotationTarget` fill the gap. Both are registered with the SDK runtime
(:func:`register_sdk_variants`) so that dashboard JSON read back through the SDK's models
(:func:`dashboard_from_json`) comes back as these types and serialises identically.

Every panel query is parameterised only through Grafana's macros and template variables
(``$__timeFilter(...)``, ``$__interval``, ``$district`` ...): Grafana quotes variable values, and
no user input is ever concatenated into SQL here. The fragments below are constants of this
package. Long ranges read the roll-ups: :func:`tiered` picks ``readings`` / ``readings_1m`` /
``readings_1h`` / ``readings_1d`` from the width of the dashboard's time range, inside SQL, with
one ``UNION ALL`` branch per tier whose span condition PostgreSQL folds to a one-time filter, so
exactly one branch runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

Lang = Literal["vi", "en"]
QueryFormat = Literal["table", "time_series"]

#: Data source as provisioned by ``ioc dashboards build`` (fixed uid, so dashboards never drift).
DATASOURCE_NAME = "Khánh Hòa IOC (PostgreSQL)"
DATASOURCE_UID = "ioc-postgres"
#: Grafana's PostgreSQL plugin id since 10.3; "postgres" remains an alias.
DATASOURCE_TYPE = "grafana-postgresql-datasource"
SQL_DATASOURCE_TYPES = (DATASOURCE_TYPE, "postgres")
FOLDER_UID = "khanhhoa-ioc"
FOLDER_TITLE = {"vi": "Khánh Hòa IOC", "en": "Khánh Hòa IOC"}
TIMEZONE = "Asia/Ho_Chi_Minh"
#: Wall screens: refresh every 30 s (the worker writes metrics every 10 s; readings arrive each 1-5 min).
WALL_REFRESH = "30s"
TAGS = ["khanhhoa-ioc"]


def ds() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def tr(lang: Lang, vi: str, en: str) -> str:
    """Pick the label for the wall's language.

    >>> tr("en", "Lũ lụt", "Flood"), tr("vi", "Lũ lụt", "Flood")
    ('Flood', 'Lũ lụt')
    """
    return en if lang == "en" else vi


# --------------------------------------------------------------------------- typed SQL query
class SqlQuery(cogvariants.Dataquery):
    """One target of a Grafana SQL data source (PostgreSQL): code-mode ``rawSql``.

    >>> SqlQuery(ref_id="A", raw_sql="SELECT 1", format="table").to_json()["rawSql"]
    'SELECT 1'
    """

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format: QueryFormat = "table",
        datasource: dm.DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        if format not in ("table", "time_series"):
            raise ValueError(f"format must be 'table' or 'time_series', got {format!r}")
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.datasource = datasource if datasource is not None else ds()
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }
        if self.hide is not None:
            out["hide"] = self.hide
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ref = data.get("datasource")
        return cls(
            ref_id=str(data.get("refId", "A")),
            raw_sql=str(data.get("rawSql", "")),
            format=data.get("format", "table"),
            datasource=dm.DataSourceRef.from_json(ref) if isinstance(ref, dict) else None,
            hide=data.get("hide"),
        )


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for :class:`SqlQuery`, in the SDK's style."""

    def __init__(self, raw_sql: str, *, format: QueryFormat = "table", ref_id: str = "A") -> None:
        self._internal = SqlQuery(ref_id=ref_id, raw_sql=raw_sql.strip(), format=format)

    def build(self) -> SqlQuery:
        return self._internal


class SqlAnnotationTarget(dm.AnnotationTarget):
    """The SDK's annotation target only models the built-in Grafana source; SQL needs ``rawSql``."""

    def __init__(self, raw_sql: str = "", ref_id: str = "Anno", **kw: Any) -> None:
        super().__init__(**kw)
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out.update({"refId": self.ref_id, "editorMode": "code", "format": "table", "rawQuery": True,
                    "rawSql": self.raw_sql})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        base = dm.AnnotationTarget.from_json(data)
        return cls(raw_sql=str(data.get("rawSql", "")), ref_id=str(data.get("refId", "Anno")),
                   limit=base.limit, match_any=base.match_any, tags=base.tags, type_val=base.type_val)


class _AnnotationTargetBuilder(cogbuilder.Builder[dm.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = SqlAnnotationTarget(raw_sql=raw_sql.strip(), limit=500, match_any=False, tags=[],
                                             type_val="dashboard")

    def build(self) -> SqlAnnotationTarget:
        return self._internal


def register_sdk_variants() -> None:
    """SDK defaults plus our SQL query, so ``Dashboard.from_json`` yields typed targets."""
    cogplugins.register_default_plugins()
    for ident in SQL_DATASOURCE_TYPES:
        cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(identifier=ident,
                                                                         from_json_hook=SqlQuery.from_json))


def to_json(model: object) -> dict[str, Any]:
    """A model as plain JSON data (what Grafana stores), via the SDK's encoder."""
    return json.loads(json.dumps(model, cls=JSONEncoder))  # type: ignore[no-any-return]


def dumps(data: Mapping[str, Any]) -> str:
    """Deterministic text: sorted keys, 2-space indent, UTF-8 kept, trailing newline."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def dashboard_from_json(data: Mapping[str, Any]) -> dm.Dashboard:
    """Read dashboard JSON back through the SDK's models (with our SQL annotation targets)."""
    register_sdk_variants()
    model = dm.Dashboard.from_json(dict(data))
    raw = (data.get("annotations") or {}).get("list") or []
    if model.annotations is not None and model.annotations.list_val:
        for ann, src in zip(model.annotations.list_val, raw, strict=True):
            target = src.get("target")
            if isinstance(target, dict) and "rawSql" in target:
                ann.target = SqlAnnotationTarget.from_json(target)
    return model


# --------------------------------------------------------------------------- variables
#: Filter on the `sensors` row `s` by the three dashboard variables; every panel uses it.
SENSOR_FILTER = "s.district IN ($district) AND s.kind IN ($kind) AND s.sensor_id IN ($sensor)"


def query_variable(name: str, label: str, sql: str, *, hide: dm.VariableHide = dm.VariableHide.DONT_HIDE
                   ) -> dash.QueryVariable:
    """A multi-value variable from ``sql``, "All" selected, refreshed when the dashboard loads."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(ds())
        .query(sql.strip())
        .multi(True)
        .include_all(True)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .hide(hide)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def variables(lang: Lang, kinds: Sequence[str]) -> list[dash.QueryVariable]:
    """district → kind → sensor, each narrowing the next; ``kinds`` scopes an area's dashboard."""
    kind_list = ", ".join(f"'{k}'" for k in kinds)  # constants from ioc.domain, never user input
    return [
        query_variable(
            "district", tr(lang, "Huyện/thị", "District"),
            "SELECT DISTINCT district FROM sensors WHERE retired_at IS NULL AND district <> '' "
            f"AND kind IN ({kind_list}) ORDER BY 1",
        ),
        query_variable(
            "kind", tr(lang, "Loại cảm biến", "Sensor kind"),
            "SELECT DISTINCT kind FROM sensors WHERE retired_at IS NULL AND district IN ($district) "
            f"AND kind IN ({kind_list}) ORDER BY 1",
        ),
        query_variable(
            "sensor", tr(lang, "Cảm biến", "Sensor"),
            "SELECT sensor_id AS __value, name || ' (' || sensor_id || ')' AS __text FROM sensors "
            "WHERE retired_at IS NULL AND district IN ($district) AND kind IN ($kind) ORDER BY sensor_id",
        ),
    ]


# --------------------------------------------------------------------------- roll-up tiers
@dataclass(frozen=True)
class Tier:
    """One source of readings and the widest/narrowest dashboard range it serves."""

    table: str
    time_col: str
    min_span: str | None  # exclusive lower bound (PostgreSQL interval literal)
    max_span: str | None  # inclusive upper bound
    rollup: bool


#: Raw rows only for short ranges; each roll-up keeps a panel under ~5k points per series.
TIERS: tuple[Tier, ...] = (
    Tier("readings", "ts", None, "6 hours", False),
    Tier("readings_1m", "bucket", "6 hours", "3 days", True),
    Tier("readings_1h", "bucket", "3 days", "90 days", True),
    Tier("readings_1d", "bucket", "90 days", None, True),
)
SPAN = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"

Agg = Literal["mean", "sum", "max", "min"]
_RAW_AGG = {"mean": "avg(r.value)", "sum": "sum(r.value)", "max": "max(r.value)", "min": "min(r.value)"}
_ROLLUP_AGG = {"mean": "sum(r.mean * r.n) / sum(r.n)", "sum": "sum(r.mean * r.n)", "max": "max(r.max)",
               "min": "min(r.min)"}


def _span_cond(t: Tier) -> str:
    parts = []
    if t.min_span:
        parts.append(f"{SPAN} > interval '{t.min_span}'")
    if t.max_span:
        parts.append(f"{SPAN} <= interval '{t.max_span}'")
    return " AND ".join(parts)


def tiered(metrics: Sequence[str], agg: Agg, series: str, *, where: str = SENSOR_FILTER,
           kinds: Sequence[str] | None = None, factor: str | None = None) -> str:
    """Time series of ``agg`` per ``$__interval`` for ``metrics``, one series per ``series`` expression.

    The tier is chosen inside SQL from the range width (see :data:`TIERS`); ``series`` is an SQL
    expression over ``s`` (sensors) and ``r.metric``. ``factor``, an expression over ``s``,
    scales each value (e.g. a share of the sensor's own reference).
    """
    metric_list = ", ".join(f"'{m}'" for m in metrics)
    kind_cond = "" if not kinds else " AND s.kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"
    branches = []
    for t in TIERS:
        value = (_ROLLUP_AGG if t.rollup else _RAW_AGG)[agg]
        if factor:
            value = f"({value}) * {factor}"
        branches.append(
            f"  SELECT $__timeGroupAlias(r.{t.time_col}, $__interval), {series} AS metric, {value} AS value\n"
            f"  FROM {t.table} r JOIN sensors s ON s.sensor_id = r.sensor_id\n"
            f"  WHERE {_span_cond(t)} AND $__timeFilter(r.{t.time_col})\n"
            f"    AND r.metric IN ({metric_list}){kind_cond} AND {where}\n"
            "  GROUP BY 1, 2" + (f", {factor}" if factor else "")
        )
    return "SELECT * FROM (\n" + "\n  UNION ALL\n".join(branches) + "\n) t\nORDER BY 1, 2"


# --------------------------------------------------------------------------- alerts as annotations
def alerts_annotation(lang: Lang) -> dash.AnnotationQuery:
    """Every alert that overlaps the range, as a region from opened to resolved (or still open)."""
    sql = f"""
SELECT a.opened_at AS time,
       coalesce(a.resolved_at, $__timeTo()::timestamptz) AS timeend,
       upper(a.severity) || ' · ' || s.name || ': ' || a.message AS text,
       a.kind || ',' || a.severity || ',' || a.rule || ',' || a.sensor_id AS tags
FROM alerts a JOIN sensors s ON s.sensor_id = a.sensor_id
WHERE a.opened_at <= $__timeTo()::timestamptz
  AND coalesce(a.resolved_at, $__timeTo()::timestamptz) >= $__timeFrom()::timestamptz
  AND {SENSOR_FILTER}
ORDER BY a.opened_at
"""
    return (
        dash.AnnotationQuery()
        .name(tr(lang, "Cảnh báo", "Alerts"))
        .datasource(ds())
        .enable(True)
        .hide(False)
        .icon_color("red")
        .target(_AnnotationTargetBuilder(sql))
    )


def base_dashboard(uid: str, title: str, lang: Lang, kinds: Sequence[str], *, time_from: str = "now-24h"
                   ) -> dash.Dashboard:
    """Fixed uid, timezone, wall refresh, the three variables and the alert annotations."""
    d = (
        dash.Dashboard(title)
        .uid(uid)
        .tags([*TAGS, lang])
        .timezone(TIMEZONE)
        .time(time_from, "now")
        .refresh(WALL_REFRESH)
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .readonly()
        # Grafana adds its built-in "Annotations & Alerts" (the HTTP API's annotations) on load;
        # the SDK cannot mark one as builtIn, so declaring it here would show it twice.
        .annotation(alerts_annotation(lang))
    )
    for v in variables(lang, kinds):
        d = d.with_variable(v)
    return d


# --------------------------------------------------------------------------- small helpers
def grid(x: int, y: int, w: int, h: int) -> dm.GridPos:
    return dm.GridPos(x=x, y=y, w=w, h=h)


def thresholds(steps: Sequence[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps]
    )


def value_map(options: Mapping[str, tuple[str, str]]) -> dm.ValueMap:
    """value -> (display text, colour)."""
    return dm.ValueMap(options={k: dm.ValueMappingResult(text=t, color=c, index=i)
                                for i, (k, (t, c)) in enumerate(options.items())})


def range_map(lo: float, hi: float, text: str, color: str, index: int) -> dm.RangeMap:
    return dm.RangeMap(options=dm.DashboardRangeMapOptions(
        from_val=lo, to=hi, result=dm.ValueMappingResult(text=text, color=color, index=index)))


def fixed_color(color: str) -> dash.FieldColor:
    return dash.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(color)


def prop(id_: str, value: Any) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=id_, value=value)

