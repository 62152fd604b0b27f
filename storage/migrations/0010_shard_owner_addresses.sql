-- Where to find the owner of a shard (issue 17, "every instance answers
-- every route"). A request for a connection whose shard another instance
-- owns is sent to that instance's token service through CAF's middleman.
--
-- shards_pid: the backend pid of the session that holds the instance's
-- shard locks (storage/shard_ownership.cpp writes it every round, and
-- clears it from any other row that still names that pid, since pids are
-- reused). Joining pg_locks on it gives each shard's owner without trusting
-- any claim an instance could make: only the session that holds a lock
-- appears in pg_locks with it.
--
-- token_address: host:port of the instance's token service, as the others
-- should dial it (`cluster.advertise_address`); NULL when it publishes none,
-- and then requests for its shards are served by the asking instance from
-- the database under the lease.
ALTER TABLE service_instances
  ADD COLUMN shards_pid    integer,
  ADD COLUMN token_address text;
