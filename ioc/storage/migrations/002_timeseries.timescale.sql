-- TimescaleDB: hypertable, compression, retention and continuous aggregates.
-- {retention_days} and {compress_after_days} are bound as literals by the migrator (psycopg.sql).
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'sensor_id, metric',
                          timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('readings', make_interval(days => {compress_after_days}), if_not_exists => TRUE);
SELECT add_retention_policy('readings', make_interval(days => {retention_days}), if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, sensor_id, metric,
       count(*)::integer AS n, avg(value) AS mean, min(value) AS min, max(value) AS max,
       last(value, ts) AS last
FROM readings GROUP BY 1, 2, 3
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '7 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', ts) AS bucket, sensor_id, metric,
       count(*)::integer AS n, avg(value) AS mean, min(value) AS min, max(value) AS max,
       last(value, ts) AS last
FROM readings GROUP BY 1, 2, 3
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1d', start_offset => INTERVAL '60 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '6 hours', if_not_exists => TRUE);
