"""Panel shapes the area modules share, so each area states only what its panels show.

Every panel of the wall reads the one PostgreSQL data source through code-mode SQL
(:class:`dashboards.common.Sql`); :func:`sql_panel` sets that part (id, title, data source,
targets, position) on any SDK panel builder. The helpers below add the visual defaults that
recur across areas: the wall's time series, tables with headers, one coloured stat tile per
row, and marker maps centred on Khánh Hòa. What a single panel alone configures stays in its
area module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm

from dashboards.common import QueryFormat, Sql, ds, prop


class SqlPanelBuilder(Protocol):
    """The part of every SDK panel builder that :func:`sql_panel` sets."""

    def id(self, id_val: int) -> Self: ...
    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: dm.DataSourceRef) -> Self: ...
    def targets(self, targets: list[cogbuilder.Builder[cogvariants.Dataquery]]) -> Self: ...
    def grid_pos(self, grid_pos: dm.GridPos) -> Self: ...


P = TypeVar("P", bound=SqlPanelBuilder)

def sql_panel(panel: P, panel_id: int, title: str, sql: str | Sequence[str], pos: dm.GridPos, *,
              description: str | None = None, format: QueryFormat = "table") -> P:
    """``panel`` reading ``sql`` (one query, or several as targets A, B, ...) from the IOC data source.

    >>> p = sql_panel(stat.Panel(), 7, "t", ["SELECT 1", "SELECT 2"], dm.GridPos(x=0, y=0, w=4, h=4)).build()
    >>> [(t.ref_id, t.raw_sql, t.format) for t in p.targets], p.description is None
    ([('A', 'SELECT 1', 'table'), ('B', 'SELECT 2', 'table')], True)
    """
    queries = [sql] if isinstance(sql, str) else sql
    p = (
        panel.id(panel_id)
        .title(title)
        .datasource(ds())
        .targets([Sql(q, format=format, ref_id=chr(ord("A") + i)) for i, q in enumerate(queries)])
        .grid_pos(pos)
    )
    return p if description is None else p.description(description)


def timeseries_panel() -> timeseries.Panel:
    """A time series with the wall's legend and a shared, sorted tooltip."""
    return (
        timeseries.Panel()
        .line_width(1)
        .fill_opacity(0)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM)
                .show_legend(True))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )


def series_panel(panel_id: int, title: str, sql: str | Sequence[str], pos: dm.GridPos, *,
                 description: str | None = None) -> timeseries.Panel:
    """The wall's time series over ``sql`` (queries in Grafana's ``time_series`` format)."""
    return sql_panel(timeseries_panel(), panel_id, title, sql, pos, description=description, format="time_series")


def dashed_line() -> dm.DynamicConfigValue:
    """Override property for limit and alarm lines, so they read apart from the measured series."""
    return prop("custom.lineStyle", {"dash": [10, 10], "fill": "dash"})


def table_panel(panel_id: int, title: str, sql: str, pos: dm.GridPos, *, description: str | None = None
                ) -> table.Panel:
    """A table of the query's rows, with its header shown."""
    return sql_panel(table.Panel().show_header(True), panel_id, title, sql, pos, description=description)


def tiles_panel(panel_id: int, title: str, sql: str, pos: dm.GridPos, *, description: str | None = None
                ) -> stat.Panel:
    """One tile per row of ``(metric, value)``: the value and its name on a background in the threshold's colour."""
    return (
        sql_panel(stat.Panel(), panel_id, title, sql, pos, description=description)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(True).fields("/^value$/"))
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
    )


def marker_layer(name: str, color_field: str, size: int) -> cb.MapLayerOptions:
    """Circles at each row's ``latitude``/``longitude``, coloured by ``color_field``."""
    return (
        cb.MapLayerOptions()
        .type("markers")
        .name(name)
        .location(cb.FrameGeometrySource().mode(cm.FrameGeometrySourceMode.COORDS)
                  .latitude("latitude").longitude("longitude"))
        .tooltip(True)
        .config({
            "showLegend": True,
            "style": {
                "color": {"field": color_field, "fixed": "green"},
                "opacity": 0.9,
                "size": {"fixed": size, "max": 12, "min": 4},
                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
            },
        })
    )


def map_panel(panel_id: int, title: str, sql: str, pos: dm.GridPos, *, layer: cb.MapLayerOptions, zoom: int,
              description: str | None = None) -> geomap.Panel:
    """``layer`` over the default basemap, centred on Khánh Hòa (12° N, 109° E), row details on hover."""
    return (
        sql_panel(geomap.Panel(), panel_id, title, sql, pos, description=description)
        .view(geomap.MapViewConfig().id("coords").lat(12).lon(109).zoom(zoom))
        .basemap(cb.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
    )
