-- A member keeps at most oauth.max_pending_states states (issue 16): each
-- authorization counts and trims that member's states, newest first, so
-- they are found by member instead of scanning the whole team.
CREATE INDEX oauth_states_by_member ON oauth_states (team_id, user_id, created_at);
