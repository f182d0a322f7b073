-- A metrics flush is retried when the connection drops, and a drop after the server committed
-- but before the client heard it wrote the same flush twice (double counts on the pipeline-health
-- board). One row per (stage, worker, metric, ts) makes the retry a no-op (ON CONFLICT DO NOTHING).
DELETE FROM pipeline_metrics a USING pipeline_metrics b
 WHERE a.ctid > b.ctid AND a.stage = b.stage AND a.worker = b.worker AND a.metric = b.metric AND a.ts = b.ts;
CREATE UNIQUE INDEX IF NOT EXISTS pipeline_metrics_key ON pipeline_metrics (stage, worker, metric, ts);
