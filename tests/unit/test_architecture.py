"""The shape STYLE 22 asks for: imports point one way, and SQL text lives only in the storage layer.

`lint-imports` (run by `make lint`) checks the import contracts in pyproject.toml; these tests keep
the contracts honest and look for SQL where it does not belong.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Statements we execute (the code base writes SQL keywords in capitals). Grafana panel SQL in
#: dashboards/ is data for Grafana, not for psycopg, and test_dashboards_check runs it.
SQL = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|ROLE)"
                 r"|ALTER\s+TABLE|DROP\s+TABLE|GRANT\s+\w+\s+ON)\b", re.DOTALL)


def _contracts() -> list[dict[str, object]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_foundation_contract_names_every_module_of_ioc_but_the_composition() -> None:
    foundation = next(c for c in _contracts() if c["type"] == "forbidden")
    listed = set(foundation["source_modules"])  # type: ignore[arg-type]
    present = {f"ioc.{p.stem if p.is_file() else p.name}" for p in (ROOT / "ioc").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert present - {"ioc.composition"} == listed


def test_the_import_contracts_hold() -> None:
    out = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def _docstrings(tree: ast.Module) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr)}


def _sql_strings(path: Path) -> list[str]:
    """Every string literal (f-strings by their literal parts) that reads as a SQL statement."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        else:
            continue
        if SQL.search(text):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:80]!r}")
    return found


def test_no_sql_text_outside_the_storage_layer() -> None:
    offenders = [hit for package in ("ioc", "streams", "detectors", "sensors_sim")
                 for path in sorted((ROOT / package).rglob("*.py"))
                 if not path.is_relative_to(ROOT / "ioc" / "storage") for hit in _sql_strings(path)]
    assert not offenders, "SQL text outside ioc/storage:\n" + "\n".join(offenders)


def test_the_sql_pattern_finds_what_it_should() -> None:
    assert SQL.search("SELECT count(*) FROM readings")
    assert SQL.search("INSERT INTO alerts (a) VALUES (%s)")
    assert SQL.search("UPDATE alerts SET state = %s")
    assert not SQL.search("select the gauge from the list")  # prose
