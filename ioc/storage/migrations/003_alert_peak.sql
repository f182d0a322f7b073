-- The highest severity an alert reached, so a de-escalated flood still shows it was BĐ III.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS peak_severity text
    CHECK (peak_severity IN ('info', 'warning', 'critical'));
UPDATE alerts SET peak_severity = severity WHERE peak_severity IS NULL;
