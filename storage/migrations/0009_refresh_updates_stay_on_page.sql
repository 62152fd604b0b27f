-- A refresh storm rewrites every connection row once (issue 17). An
-- UPDATE that changes no indexed column and finds room on the row's page
-- is a heap-only tuple (HOT) update: the new row version stays on the
-- page and no index gets a new entry. Two things stopped that for a
-- refresh: the index on (team_id, expires_at) covers the expiry a refresh
-- writes (and its predicate the status), and pages were filled to the
-- brim.
--
-- Nothing reads connector_tokens by expiry: each connection's actor plans
-- its own refresh from the row it loaded (docs/REFRESH.md). The index only
-- cost every refresh an insertion into all four indexes, so it goes.
--
-- Pages written from now on keep a fifth free for the next version of
-- their rows. Rows written before keep their full pages until VACUUM FULL
-- (or pg_repack) rewrites the table; updates still work, only not HOT.
DROP INDEX IF EXISTS connector_tokens_expiry;
ALTER TABLE connector_tokens SET (fillfactor = 80);
