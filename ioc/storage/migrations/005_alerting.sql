-- Alerts as a mature alarm system: conditions per sensor and detector feed one alert per key
-- (a single sensor, or an incident across a river's gauges); notifications leave through an
-- outbox written in the same transaction as the transition; silences mute notifications.

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS family text NOT NULL DEFAULT 'warning';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS message_en text NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS crossing_uncertainty_s double precision;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS members text[] NOT NULL DEFAULT '{}';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS grouped boolean NOT NULL DEFAULT false;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS repeat_s double precision;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS channels text[] NOT NULL DEFAULT '{}';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS last_notified_at timestamptz;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS ack_note text;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS muted_by text;  -- 'silence:<id>' while a silence covers it
CREATE INDEX IF NOT EXISTS alerts_opened_idx ON alerts (opened_at);

-- Who did it: a person for acknowledgements and silences, the worker for everything else.
ALTER TABLE alert_events ADD COLUMN IF NOT EXISTS actor text NOT NULL DEFAULT 'ioc';

-- One row per sensor and detector: its current (held) severity. An alert's severity is the
-- highest of its members' that are not inhibited.
CREATE TABLE IF NOT EXISTS alert_conditions (
    condition_key          text PRIMARY KEY,          -- sensor_id:rule
    alert_key              text NOT NULL,             -- the alert or incident it feeds
    sensor_id              text NOT NULL,
    rule                   text NOT NULL,
    kind                   text NOT NULL,
    family                 text NOT NULL,
    metric                 text,
    severity               text CHECK (severity IN ('info', 'warning', 'critical')),  -- NULL: clear
    inhibited              boolean NOT NULL DEFAULT false,
    since                  timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    value                  double precision,
    threshold              double precision,
    message                text NOT NULL DEFAULT '',
    message_en             text NOT NULL DEFAULT '',
    predicted_crossing_at  timestamptz,
    crossing_uncertainty_s double precision,
    lead_time_s            double precision,
    detail                 jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_conditions_active_key ON alert_conditions (alert_key) WHERE severity IS NOT NULL;
CREATE INDEX IF NOT EXISTS alert_conditions_active_sensor ON alert_conditions (sensor_id) WHERE severity IS NOT NULL;

-- Transactional outbox: a notification exists once its transition has committed, and stays
-- until its channel accepted it. Receivers deduplicate by notification_id.
CREATE TABLE IF NOT EXISTS alert_outbox (
    notification_id text PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
    channel         text NOT NULL,
    event           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    delivered_at    timestamptz,
    failed_at       timestamptz,                      -- gave up after the last retry: visible, never dropped
    last_error      text
);
CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox (channel, next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS alert_outbox_alert ON alert_outbox (alert_id, channel, created_at);

-- Maintenance windows: a silence mutes notifications, never the record.
CREATE TABLE IF NOT EXISTS alert_silences (
    silence_id  bigserial PRIMARY KEY,
    sensor_id   text,
    kind        text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz,                          -- ended early by an operator
    CHECK (sensor_id IS NOT NULL OR kind IS NOT NULL),
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS alert_silences_active ON alert_silences (ends_at) WHERE expired_at IS NULL;
