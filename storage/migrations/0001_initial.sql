-- connector-manager initial schema.
--
-- Every table carries team_id and every primary key starts with it, so the
-- tables can be distributed by team_id (Citus) without a redesign; see
-- docs/STORAGE.md. Secrets are bytea ciphertexts written by the service
-- (XChaCha20-Poly1305, bound to table, row id, user, provider and column);
-- PostgreSQL never sees a plaintext secret.

-- One row per (team, user, provider) connection.
CREATE TABLE connector_tokens (
  team_id            text        NOT NULL,
  id                 uuid        NOT NULL,
  user_id            text        NOT NULL,
  provider           text        NOT NULL,
  kind               text        NOT NULL CHECK (kind IN ('oauth', 'api_key')),
  status             text        NOT NULL DEFAULT 'connected'
                     CHECK (status IN ('connected', 'needs_reauth', 'disconnected')),
  reason             text,
  access_token       bytea,
  refresh_token      bytea,
  expires_at         timestamptz,
  scopes             jsonb       NOT NULL DEFAULT '[]'::jsonb,
  metadata           jsonb       NOT NULL DEFAULT '{}'::jsonb,
  key_id             integer     NOT NULL,
  -- Fencing token: every write bumps it; a write naming a stale version
  -- is refused.
  version            bigint      NOT NULL DEFAULT 1,
  -- Refresh lease: only the holder may call the provider until it expires.
  lease_owner        text,
  lease_expires_at   timestamptz,
  refresh_failures   integer     NOT NULL DEFAULT 0,
  last_refresh_at    timestamptz,
  last_error_at      timestamptz,
  validated_at       timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, id),
  UNIQUE (team_id, user_id, provider)
);
CREATE INDEX connector_tokens_expiry ON connector_tokens (team_id, expires_at)
  WHERE status = 'connected';

-- Pending OAuth authorizations. Only a keyed hash of the state is stored;
-- the PKCE verifier is encrypted. Rows are single-use and expire.
CREATE TABLE oauth_states (
  team_id         text        NOT NULL,
  state_hash      bytea       NOT NULL,
  user_id         text        NOT NULL,
  provider        text        NOT NULL,
  connector_name  text,
  code_verifier   bytea,
  redirect_uri    text        NOT NULL,
  params          jsonb       NOT NULL DEFAULT '{}'::jsonb,
  key_id          integer     NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL,
  PRIMARY KEY (team_id, state_hash)
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

-- Team-level connector configuration managed by admins.
CREATE TABLE connector_configs (
  team_id         text        NOT NULL,
  connector_name  text        NOT NULL,
  enabled         boolean     NOT NULL DEFAULT false,
  config          jsonb       NOT NULL DEFAULT '{}'::jsonb,
  filters         jsonb       NOT NULL DEFAULT '{}'::jsonb,
  -- Write-only secrets (client secret ...), encrypted as one JSON object.
  secrets         bytea,
  key_id          integer,
  version         bigint      NOT NULL DEFAULT 1,
  updated_by      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, connector_name)
);

-- Transactional outbox: events are written in the same transaction as the
-- change they describe and delivered at least once afterwards.
CREATE TABLE event_outbox (
  team_id      text        NOT NULL,
  seq          bigserial   NOT NULL,
  event_id     uuid        NOT NULL,
  topic        text        NOT NULL CHECK (topic IN ('token-events', 'entity-events')),
  event_type   text        NOT NULL,
  payload      jsonb       NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, seq),
  UNIQUE (team_id, event_id)
);
CREATE INDEX event_outbox_seq ON event_outbox (seq);

-- One row per (event, webhook) delivery with its retry state.
CREATE TABLE webhook_deliveries (
  team_id          text        NOT NULL,
  event_id         uuid        NOT NULL,
  webhook          text        NOT NULL,
  attempts         integer     NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  delivered_at     timestamptz,
  last_status      integer,
  PRIMARY KEY (team_id, event_id, webhook)
);

-- Who did what, when, from where. Never a secret.
CREATE TABLE audit_log (
  team_id      text        NOT NULL,
  seq          bigserial   NOT NULL,
  at           timestamptz NOT NULL DEFAULT now(),
  actor_type   text        NOT NULL CHECK (actor_type IN ('user', 'service', 'system')),
  actor_id     text        NOT NULL,
  action       text        NOT NULL,
  target       text,
  remote_addr  text,
  request_id   text,
  details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  PRIMARY KEY (team_id, seq)
);
