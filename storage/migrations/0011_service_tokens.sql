-- Service tokens created by the operator (issue 19: `connector-manager
-- service-tokens create|list|revoke`), beside the ones in the service file.
-- Only the SHA-256 of a token is stored; the token itself is printed once
-- when it is created. Every instance reads the live ones every
-- auth.service_token_poll_ms, so a new or revoked token takes effect
-- without a restart. A revoked row is kept (revoked_at) for the record.
--
-- Not team data (a service acts for every team): with Citus this is a
-- reference table (docs/STORAGE.md).
CREATE TABLE service_tokens (
  id           uuid        PRIMARY KEY,
  name         text        NOT NULL,
  token_sha256 text        NOT NULL UNIQUE,
  scopes       text[]      NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

-- One live token per name: a name is who a service is in the audit log.
CREATE UNIQUE INDEX service_tokens_live_name ON service_tokens (name) WHERE revoked_at IS NULL;
