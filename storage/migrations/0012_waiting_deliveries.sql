-- The webhook deliveries still to be made, for the claim that picks the
-- due ones and for the backlog GET /metrics reports (issue 19): delivered
-- rows are kept for the record and would otherwise be scanned too.
CREATE INDEX webhook_deliveries_waiting ON webhook_deliveries (next_attempt_at)
  WHERE delivered_at IS NULL;
