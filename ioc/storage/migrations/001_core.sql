-- Core relations. Idempotent: every statement can run twice.
CREATE TABLE IF NOT EXISTS sensors (
    sensor_id       text PRIMARY KEY CHECK (length(sensor_id) BETWEEN 1 AND 128),
    kind            text NOT NULL,
    name            text NOT NULL,
    district        text NOT NULL DEFAULT '',
    lat             double precision,
    lon             double precision,
    approximate     boolean NOT NULL DEFAULT false,
    metrics         jsonb NOT NULL DEFAULT '{}'::jsonb,
    alarm_levels    jsonb,
    interval_s      integer,
    extra           jsonb NOT NULL DEFAULT '{}'::jsonb,
    auto_registered boolean NOT NULL DEFAULT false,
    retired_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS readings (
    ts        timestamptz NOT NULL,
    sensor_id text NOT NULL,
    metric    text NOT NULL,
    value     double precision NOT NULL,
    CONSTRAINT readings_key UNIQUE (sensor_id, metric, ts)
);
CREATE INDEX IF NOT EXISTS readings_ts_idx ON readings (ts DESC);

CREATE TABLE IF NOT EXISTS readings_1m (
    bucket    timestamptz NOT NULL,
    sensor_id text NOT NULL,
    metric    text NOT NULL,
    n         integer NOT NULL,
    mean      double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    last      double precision NOT NULL,
    PRIMARY KEY (sensor_id, metric, bucket)
);
CREATE INDEX IF NOT EXISTS readings_1m_bucket_idx ON readings_1m (bucket DESC);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id              bigserial PRIMARY KEY,
    alert_key             text NOT NULL,
    sensor_id             text NOT NULL,
    rule                  text NOT NULL,
    kind                  text NOT NULL,
    metric                text,
    severity              text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state                 text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at             timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    acknowledged_at       timestamptz,
    acknowledged_by       text,
    resolved_at           timestamptz,
    value                 double precision,
    threshold             double precision,
    predicted_crossing_at timestamptz,
    lead_time_s           double precision,
    message               text NOT NULL,
    detail                jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- One active alert per key, even with concurrent workers.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active_per_key ON alerts (alert_key) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_state_idx ON alerts (state, severity);

CREATE TABLE IF NOT EXISTS alert_events (
    event_id  bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    event     text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_events_alert_idx ON alert_events (alert_id, at);

CREATE TABLE IF NOT EXISTS deadletters (
    dl_id          bigserial PRIMARY KEY,
    dl_key         text NOT NULL UNIQUE,
    received_at    timestamptz NOT NULL,
    source         text NOT NULL,
    reason         text NOT NULL,
    detail         text NOT NULL DEFAULT '',
    topic          text,
    kafka_partition integer,
    kafka_offset   bigint,
    raw            bytea NOT NULL,
    replayed_at    timestamptz
);
CREATE INDEX IF NOT EXISTS deadletters_reason_idx ON deadletters (reason, received_at);

CREATE TABLE IF NOT EXISTS pipeline_metrics (
    ts     timestamptz NOT NULL,
    stage  text NOT NULL,
    worker text NOT NULL,
    metric text NOT NULL,
    value  double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS pipeline_metrics_idx ON pipeline_metrics (stage, metric, ts DESC);
