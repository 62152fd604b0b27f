-- Event delivery across instances.
--
-- Every outbox insert notifies channel connector_events with the event's
-- sequence number; PostgreSQL delivers notifications only when the
-- inserting transaction commits, so a listener never hears of an event it
-- cannot read yet. Listeners also poll, so a missed notification (a
-- listener reconnecting) only delays delivery.
CREATE FUNCTION event_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('connector_events', NEW.seq::text);
  RETURN NEW;
END;
$$;

CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
  FOR EACH ROW EXECUTE FUNCTION event_outbox_notify();

-- Webhook deliveries are enqueued in the event's transaction and claimed by
-- whichever instance finds them due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
  WHERE delivered_at IS NULL;
ALTER TABLE webhook_deliveries ADD COLUMN last_error text;
ALTER TABLE webhook_deliveries ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
