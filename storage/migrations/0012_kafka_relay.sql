-- The Kafka relay (issue 21): how far the outbox has been acknowledged by
-- the brokers, and the events they refused for good.
--
-- One relay produces at a time, the instance holding the relay's advisory
-- lock (storage/kafka_relay_store.hpp); the cursor is the outbox position
-- (txid, seq: commit order, migration 0004) up to which every event was
-- acknowledged or parked. It only moves forward.
CREATE TABLE kafka_relay_cursor (
  id          integer     PRIMARY KEY CHECK (id = 1),
  txid        xid8        NOT NULL,
  seq         bigint      NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Events a broker refused for good (too large, not authorized), skipped so
-- the rest flows; kept for the operator, with librdkafka's error name.
CREATE TABLE kafka_parked (
  team_id    text        NOT NULL,
  event_id   uuid        NOT NULL,
  topic      text        NOT NULL,
  reason     text        NOT NULL,
  parked_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, event_id)
);
