-- A callback knows only its state, not the team: look states up by their
-- keyed hash alone. (Distribution: oauth_states is small and short-lived;
-- distribute it by state_hash or keep it on the coordinator, see
-- docs/STORAGE.md.)
CREATE UNIQUE INDEX oauth_states_by_hash ON oauth_states (state_hash);
