-- The next Kafka offset each consumer stream must apply, per partition, written in the same
-- transaction as the rows it produced. Kafka's own committed offsets then only say where to
-- start reading; this table says what was really applied, so a record the consumer skipped
-- (a stale fetch after a rebalance, a premature commit) is seen and fetched again.
CREATE TABLE IF NOT EXISTS consumed_offsets (
    stream          text    NOT NULL,   -- consumer group and topic
    kafka_partition integer NOT NULL,
    next_offset     bigint  NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, kafka_partition)
);

-- A malformed payload that arrives five times is stored once, but its arrivals are counted.
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS occurrences bigint NOT NULL DEFAULT 1;
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;
UPDATE deadletters SET last_seen_at = received_at WHERE last_seen_at IS NULL;
