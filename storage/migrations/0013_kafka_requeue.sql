-- Parked Kafka events an operator sent again (`connector-manager kafka
-- requeue`, issue 21): the relay produces each row whose requeued_at is
-- set, deletes the row once a broker acknowledged it, and parks it again
-- (requeued_at cleared, the new reason kept) if it is refused once more.
ALTER TABLE kafka_parked ADD COLUMN requeued_at timestamptz;
CREATE INDEX kafka_parked_requeued ON kafka_parked (requeued_at) WHERE requeued_at IS NOT NULL;
