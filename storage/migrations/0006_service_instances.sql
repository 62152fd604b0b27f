-- Live instances of the service (issue 16, "the newest token across
-- instances"). Each instance beats every cluster.heartbeat_ms on a
-- connection of its own. A beat tells the instance how many others are
-- live: alone, it may serve tokens from memory; with others, a token is
-- served only after checking that no newer version is stored. A refresh
-- lease is refused to an instance outside [active_from, active_until]: one
-- that has just joined (until every other instance's "alone" view has run
-- out) or whose beats have lapsed. docs/DECISIONS.md explains the timing.
--
-- Not team data: with Citus this is a reference table (docs/STORAGE.md).
CREATE TABLE service_instances (
  instance_id   text        PRIMARY KEY,
  active_from   timestamptz NOT NULL,
  active_until  timestamptz NOT NULL,
  beat_at       timestamptz NOT NULL
);
