"""A migration edited after it was applied is refused by name, never skipped silently."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from ioc.errors import IocError
from ioc.storage.migrate import migrate
from tests.conftest import stack_env
from tests.support import scalar

pytestmark = pytest.mark.integration


def test_a_tampered_checksum_stops_migrate_naming_the_migration(db_url: str) -> None:
    """The stored checksum no longer matches the file: as if the file had been edited since."""
    assert migrate(db_url).applied == []  # fixture already migrated: a clean re-run does nothing
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'deadbeefdeadbeef' WHERE version = '003'")
    with pytest.raises(IocError) as e:
        migrate(db_url)
    msg = str(e.value)
    assert "003_alert_peak" in msg and "edited after it was applied" in msg
    assert "new migration" in msg  # says how to resolve it


def test_an_edited_migration_file_is_refused_and_the_original_passes(pg_url: str, tmp_path: Path) -> None:
    from ioc.storage.db import create_database

    url = create_database(pg_url, f"t_mig_{tmp_path.name[-10:].lower().replace('-', '_')}")
    src = Path(str(resources.files("ioc.storage").joinpath("migrations")))
    mdir = tmp_path / "migrations"
    shutil.copytree(src, mdir)
    first = migrate(url, migrations_dir=mdir)
    assert "001_core" in first.applied
    original = (mdir / "001_core.sql").read_text(encoding="utf-8")
    (mdir / "001_core.sql").write_text(original + "\n-- an innocent-looking edit\n", encoding="utf-8")
    with pytest.raises(IocError, match="001_core"):
        migrate(url, migrations_dir=mdir)
    # nothing was applied or recorded by the refused run
    assert scalar(url, "SELECT count(*) FROM schema_migrations") == len(first.applied)
    (mdir / "001_core.sql").write_text(original, encoding="utf-8")
    assert migrate(url, migrations_dir=mdir).applied == []


def test_ioc_db_migrate_exits_2_with_the_message(stack, db_url: str) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'feedfacefeedface' WHERE version = '004'")
    res = subprocess.run([sys.executable, "-m", "ioc.composition.cli", "db", "migrate", "--no-seed"],
                         env=stack_env(stack, IOC_DATABASE_URL=db_url), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())  # rich wraps long lines
    assert "004_offset_ledger" in err and "edited after it was applied" in err
