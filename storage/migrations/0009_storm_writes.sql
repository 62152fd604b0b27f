-- Writes of a refresh storm (issue 17), which rewrites every connection
-- row once and appends an event for each, in groups of up to 256 per
-- transaction (actors/storage_actor.cpp, group commit).
--
-- 1. Refreshes stay on their page. An UPDATE that changes no indexed
-- column and finds room on the row's page is a heap-only tuple (HOT)
-- update: the new row version stays on the page and no index gets a new
-- entry. Two things stopped that for a refresh: the index on (team_id,
-- expires_at) covers the expiry a refresh writes (and its predicate the
-- status), and pages were filled to the brim. Nothing reads
-- connector_tokens by expiry: each connection's actor plans its own
-- refresh from the row it loaded (docs/REFRESH.md), so the index goes.
-- Pages written from now on keep a fifth free for the next version of
-- their rows; rows written before keep their full pages until VACUUM FULL
-- (or pg_repack) rewrites the table, and their updates work, only not HOT.
DROP INDEX IF EXISTS connector_tokens_expiry;
ALTER TABLE connector_tokens SET (fillfactor = 80);

-- 2. One notification per transaction, not one per event. Listeners only
-- wake up on it and read the outbox (storage/notify_listener.cpp); the
-- sequence number it carried was never read. PostgreSQL folds identical
-- notifications of one transaction into one, so a group of 256 events
-- now sends one instead of 256.
DROP TRIGGER IF EXISTS event_outbox_notify ON event_outbox;
CREATE OR REPLACE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('connector_events', '');
  RETURN NULL;
END;
$$;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();
