-- Which record a partition's ledger started from: a digest of the value at offset 0. A broker
-- that lost its log (Kafka's disk, or Tansu's memory storage) re-creates the topic from offset 0;
-- without this, the ledger took the new topic's first records for redeliveries and skipped them.
ALTER TABLE consumed_offsets ADD COLUMN IF NOT EXISTS first_record bytea;
