"""The sensor registry: coverage of the province, domain numbers, validation messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ioc.domain import KIND_METRICS
from sensors_sim.errors import RegistryError
from sensors_sim.registry import DEFAULT_REGISTRY, load_registry, registry_by_id

DISTRICTS = {"Nha Trang", "Cam Ranh", "Ninh Hòa", "Cam Lâm", "Diên Khánh"}


def test_registry_covers_the_province() -> None:
    reg = load_registry()
    assert len(reg) >= 80
    assert DISTRICTS <= {s.district for s in reg}
    assert set(KIND_METRICS) == {s.kind for s in reg}
    for s in reg:
        assert set(s.metrics) <= set(KIND_METRICS[s.kind])
        assert s.sensor_id.isascii() and s.sensor_id.upper() == s.sensor_id


def test_alarm_levels_and_rates_are_the_domain_values() -> None:
    by_id = registry_by_id(load_registry())
    assert by_id["HYD_DONG_TRANG"].alarm_levels == {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}
    assert by_id["HYD_NINH_HOA"].alarm_levels == {"bd1": 4.2, "bd2": 5.0, "bd3": 5.7}
    assert by_id["HYD_DUC_MY"].alarm_levels == {"bd1": 15.5, "bd2": None, "bd3": 17.5}
    assert by_id["HYD_NINH_HOA"].extra["max_rise_m_per_h"] == 0.12
    assert by_id["HYD_DONG_TRANG"].extra["max_rise_m_per_h"] == 1.77
    assert by_id["HYD_DONG_TRANG"].kind == "water_level"
    assert by_id["TIDE_CAU_DA"].kind == "tide" and by_id["TIDE_CAU_DA"].approximate
    assert not by_id["HYD_DONG_TRANG"].approximate  # conf S in the domain data
    assert by_id["HYD_DIEN_PHU"].approximate  # conf A


def test_bad_registry_names_file_and_sensor(tmp_path: Path) -> None:
    doc = json.loads(DEFAULT_REGISTRY.read_text(encoding="utf-8"))
    doc["sensors"][3]["metrics"] = {"pm25": "mg/m³"}
    bad = tmp_path / "sensors.json"
    bad.write_text(json.dumps(doc), encoding="utf-8")
    sid = doc["sensors"][3]["sensor_id"]
    with pytest.raises(RegistryError, match=rf"sensors.json: sensor '{sid}'"):
        load_registry(bad)
