-- A health fault re-marks every hazard condition of its sensor, cleared ones included; the partial
-- index (active conditions only) did not serve that update, so each one scanned the whole table:
-- in an alert storm of thousands of sensors, a scan per finding.
CREATE INDEX IF NOT EXISTS alert_conditions_sensor ON alert_conditions (sensor_id);
