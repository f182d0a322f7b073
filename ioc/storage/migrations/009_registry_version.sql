-- The bridge and every worker reload the sensor registry every IOC_REGISTRY_REFRESH_S. At 10,000
-- sensors each reload parsed every row's JSON and replaced every entry (long-lived objects the
-- garbage collector then walked again), for nothing when the registry had not changed. Any
-- statement that changes `sensors` moves this version; the loaders read it first and reload only
-- when it moved (statement-level triggers also fire for COPY and TRUNCATE).
CREATE TABLE IF NOT EXISTS registry_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL
);
INSERT INTO registry_version (only_row, version) VALUES (true, 1) ON CONFLICT (only_row) DO NOTHING;

CREATE OR REPLACE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_version SET version = version + 1;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sensors_changed ON sensors;
CREATE TRIGGER sensors_changed AFTER INSERT OR UPDATE OR DELETE ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
DROP TRIGGER IF EXISTS sensors_truncated ON sensors;
CREATE TRIGGER sensors_truncated AFTER TRUNCATE ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
