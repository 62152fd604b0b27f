-- Read the outbox in an order no late commit can break.
--
-- Sequence numbers are taken when a transaction inserts, not when it
-- commits, so a reader that remembers "the highest seq seen" can skip an
-- event whose transaction commits late. Each row now also records its
-- transaction id; readers only read rows whose transaction is older than
-- every transaction still running (pg_snapshot_xmin), and order by
-- (txid, seq). No row can ever appear below such a position later: every
-- transaction that could still insert has a larger id.
ALTER TABLE event_outbox ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX event_outbox_commit_order ON event_outbox (txid, seq);
