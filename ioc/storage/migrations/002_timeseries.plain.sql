-- Plain PostgreSQL: the same relations as views, so every query gives the same answer.
CREATE OR REPLACE VIEW readings_1h AS
SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket, sensor_id, metric,
       count(*)::integer AS n, avg(value) AS mean, min(value) AS min, max(value) AS max,
       (array_agg(value ORDER BY ts DESC))[1] AS last
FROM readings GROUP BY 1, 2, 3;

CREATE OR REPLACE VIEW readings_1d AS
SELECT date_bin(INTERVAL '1 day', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket, sensor_id, metric,
       count(*)::integer AS n, avg(value) AS mean, min(value) AS min, max(value) AS max,
       (array_agg(value ORDER BY ts DESC))[1] AS last
FROM readings GROUP BY 1, 2, 3;
