"""Scenario files: every shipped scenario loads; bad input gives messages that point at the fix."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sensors_sim import scenario
from sensors_sim.cli import register
from sensors_sim.errors import ScenarioError
from sensors_sim.registry import load_registry

REQUIRED = {"normal_day", "rush_hour_incident", "pollution_episode", "typhoon_damrey", "flood_2025_11", "sensor_faults"}


def test_all_scenarios_load() -> None:
    reg = load_registry()
    names = set(scenario.available())
    assert REQUIRED <= names
    for name in names:
        sc = scenario.load(name, reg)
        assert sc.description and scenario.select(sc, reg)


def test_unknown_scenario_lists_valid_names() -> None:
    with pytest.raises(ScenarioError) as e:
        scenario.load("typhoon_noru", load_registry())
    assert "typhoon_noru" in str(e.value)
    for name in REQUIRED:
        assert name in str(e.value)


BAD = """name = "bad"
description = "x"
start = 2025-01-01T00:00:00+07:00
duration_h = 5
seed = 1

[[events]]
type = "storm"
id = "s"
start = 2025-01-01T00:00:00+07:00
peak = 2025-01-01T01:00:00+07:00
end = 2025-01-01T02:00:00+07:00
track = [[12.0, 109.0]]

[[events]]
type = "traffic_incident"
id = "t"
sensor = "TRF_TRAN_PHU_24"
start = 2025-01-01T00:00:00+07:00
end = 2025-01-01T01:00:00+07:00
capacity_factor = "lots"
"""


def test_malformed_scenario_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(BAD, encoding="utf-8")
    with pytest.raises(ScenarioError) as e:
        scenario.load(str(p), load_registry())
    msg = str(e.value)
    assert f"{p}:21:" in msg and "events[1].capacity_factor" in msg


def test_unknown_field_and_bad_sensor_are_located(tmp_path: Path) -> None:
    p = tmp_path / "typo.toml"
    p.write_text(BAD.replace('capacity_factor = "lots"', "capacity_factr = 0.1"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"typo.toml:21: field `events\[1\].capacity_factr`"):
        scenario.load(str(p), load_registry())
    p.write_text(BAD.replace('capacity_factor = "lots"', "").replace("TRF_TRAN_PHU_24", "TRF_NOWHERE"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"typo.toml:18: .*TRF_NOWHERE"):
        scenario.load(str(p), load_registry())


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "syntax.toml"
    p.write_text('name = "x"\nseed = = 3\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"syntax.toml: invalid TOML: .*line 2"):
        scenario.load(str(p), load_registry())


def test_cli_lists_scenarios_and_env_vars() -> None:
    group = click.Group("ioc")
    register(group)
    runner = CliRunner()
    out = runner.invoke(group, ["scenarios"])
    assert out.exit_code == 0, out.output
    assert "typhoon_damrey" in out.output
    helptext = runner.invoke(group, ["simulate", "--help"], terminal_width=200).output
    assert "IOC_SIM_SPEED" in helptext and "IOC_MQTT_URL" in helptext
    for cmd in ("record", "replay"):
        assert "env var: IOC_" in runner.invoke(group, [cmd, "--help"], terminal_width=200).output
