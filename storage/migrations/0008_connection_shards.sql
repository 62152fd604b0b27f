-- Connections fall into a fixed number of shards (issue 17, scale-out).
-- Each instance owns a share of the shards through session-level advisory
-- locks (storage/shard_ownership.hpp). It keeps live connection actors only
-- for those shards and loads them with one indexed scan per shard.
--
-- The shard count is fixed when this migration runs. It comes from
-- `cluster.shards` (`connector-manager migrate` and the server pass it as
-- the session setting cm.shard_count), with 256 by default. Later changes
-- of the setting are ignored with a warning: moving every connection to
-- another shard is not worth it when instances come and go by the shard.
--
-- A connection's shard is a stable hash of its key. It is the first four
-- bytes of SHA-256 over team_id, user_id and provider joined by the unit
-- separator (0x1f), read as a big-endian unsigned integer, modulo the
-- count. storage/shards.cpp computes the same value in C++, and a test
-- checks that both agree. The trigger fills it on every insert, so rows
-- written by tools or tests get it too. The key of a row never changes,
-- so updates leave the shard alone.
--
-- With Citus, connector_tokens stays distributed by team_id: the shard is
-- a column of the row, not a distribution key (docs/STORAGE.md).
CREATE TABLE shard_settings (
  singleton    boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
  shard_count  integer  NOT NULL CHECK (shard_count BETWEEN 1 AND 16384)
);
INSERT INTO shard_settings (shard_count)
VALUES (coalesce(nullif(current_setting('cm.shard_count', true), '')::integer, 256));

CREATE FUNCTION connection_shard(team text, member text, provider text, shards integer)
RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ((('x' || encode(substr(sha256(convert_to(team || chr(31) || member || chr(31) ||
                                                   provider, 'UTF8')), 1, 4), 'hex'))::bit(32)
           ::bigint) % shards)::integer
$$;

CREATE FUNCTION connector_tokens_set_shard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.shard := connection_shard(NEW.team_id, NEW.user_id, NEW.provider,
                                (SELECT shard_count FROM shard_settings));
  RETURN NEW;
END
$$;

ALTER TABLE connector_tokens ADD COLUMN shard integer;
UPDATE connector_tokens
   SET shard = connection_shard(team_id, user_id, provider,
                                (SELECT shard_count FROM shard_settings));
ALTER TABLE connector_tokens ALTER COLUMN shard SET NOT NULL;
CREATE TRIGGER connector_tokens_shard BEFORE INSERT ON connector_tokens
  FOR EACH ROW EXECUTE FUNCTION connector_tokens_set_shard();
-- Loading a shard walks this index in keyset pages.
CREATE INDEX connector_tokens_by_shard ON connector_tokens (shard, team_id, id);
