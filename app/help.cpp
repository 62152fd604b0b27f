#include "app/help.hpp"

#include <map>
#include <utility>

namespace cm::app {

namespace {

constexpr const char* overview = R"(usage: connector-manager [COMMAND] [OPTIONS]

Commands:
  serve            start the service (the default)
  migrate          apply database migrations and exit
  check-config     validate the service file, the providers catalog and key files
  keygen           write a key file, or rotate keys
  rekey            re-encrypt every stored value under the active key
  mint-token       print a session JWT signed with the HS256 secret
  hash-token       read a service token on stdin, print its SHA-256
  openapi          print the API's OpenAPI 3.1 document
  connections      list, show, refresh or disconnect stored connections
  service-tokens   create, list or revoke the service tokens kept in the database
  kafka            list the events Kafka refused for good, or send them again

'connector-manager COMMAND --help' says more about each.

Options every command takes:
  --config FILE    the service file (default: $CM_CONFIG, then
                   config/connector-manager.yaml)
)";

constexpr const char* config_option = R"(
  --config FILE    the service file (default: $CM_CONFIG, then
                   config/connector-manager.yaml)
)";

const std::map<std::pair<std::string, std::string>, std::string>& texts() {
  static const std::map<std::pair<std::string, std::string>, std::string> all = {
    {{"serve", ""}, R"(usage: connector-manager serve [--config FILE]

Loads and validates the configuration, refuses to start without a usable
key, applies migrations (waiting up to 30 s for PostgreSQL), and serves
HTTP (listen.*) and the token service (token_service.*) until SIGINT or
SIGTERM. A port already in use, or a database that cannot be reached, is
said at once with the reason.
)"},
    {{"migrate", ""}, R"(usage: connector-manager migrate [--config FILE]

Applies the missing database migrations and exits; applying twice is a
no-op.
)"},
    {{"check-config", ""}, R"(usage: connector-manager check-config [--config FILE]

Validates the service file, the providers catalog and the JWT key files
(including the HS256 secret file's permissions); exit 0 when all is well,
2 naming the file, line and key otherwise.
)"},
    {{"keygen", ""}, R"(usage: connector-manager keygen [--out FILE]
       connector-manager keygen --add | --activate ID | --retire ID [--out FILE]

Without a rotation option, writes a new keyring (mode 0600, never
overwrites). Key rotation (docs/STORAGE.md): --add appends a fresh key,
decrypt-only; --activate ID makes it the key new writes use; --retire ID
removes a key once no stored value uses it (checks the database). Restart
every instance after each step. Without --out, crypto.key_file is used.
)"},
    {{"rekey", ""}, R"(usage: connector-manager rekey [--batch-size N] [--pause-ms MS] [--max-passes N]

Re-encrypts every stored value under the active key beside running
servers, in short resumable batches. Exit 0 when no stored value uses an
old key or format, 1 when a rerun is needed.
)"},
    {{"mint-token", ""}, R"(usage: connector-manager mint-token --user U --team T [--admin] [--email E] [--ttl SECONDS]

Prints a session JWT for user U of team T, signed with the HS256 secret
(auth.jwt.hs256_secret_file), valid for --ttl seconds (default 3600).
For local use and tests.
)"},
    {{"hash-token", ""}, R"(usage: connector-manager hash-token < token.txt

Reads a service token on standard input and prints its SHA-256, for
auth.service_tokens[].sha256 in the service file. Tokens kept in the
database instead: 'connector-manager service-tokens create'.
)"},
    {{"openapi", ""}, R"(usage: connector-manager openapi [--config FILE]

Prints the OpenAPI 3.1 document of the HTTP API, the one GET
/api/v1/openapi.json serves (its server is oauth.public_base_url), for
generating clients without a running service.
)"},
    {{"connections", ""}, R"(usage: connector-manager connections list|show|refresh|disconnect [OPTIONS]

  list         the stored connections, filtered by --team, --user, --provider
  show         one connection: --team, --user and --provider
  refresh      refresh one connection now, through the running service
  disconnect   disconnect one connection (revoking its tokens at the
               provider), through the running service

Secrets are never printed. 'connector-manager connections SUB --help'
says more.
)"},
    {{"connections", "list"}, R"(usage: connector-manager connections list [--team T] [--user U] [--provider P] [--limit N] [--json]

Lists stored connections (every team unless --team is given), newest
change first, at most --limit (default 100, at most 10000): team, user,
provider, type, status, account, expiry and id (the connectionId events
carry). --json prints {"connections":[...]} with the fields of
GET /api/connectors/list plus team_id and user_id. Reads the database
directly; the service need not run.
)"},
    {{"connections", "show"}, R"(usage: connector-manager connections show --team T --user U --provider P [--json]

Shows one connection: status and its reason, type, account, scopes,
expiry, last change, metadata and id. Never a token. Exit 1 when there is
no such connection.
)"},
    {{"connections", "refresh"}, R"(usage: connector-manager connections refresh --team T --user U --provider P [--url URL] [--json]

Asks the running service (--url, default http://<listen.address>:<listen.port>)
to refresh the connection now, as its user would (POST
/api/connectors/{provider}/refresh), with a session JWT minted for that
user from auth.jwt.hs256_secret_file. Prints the new expiry; exit 1 with
the service's error otherwise.
)"},
    {{"connections", "disconnect"}, R"(usage: connector-manager connections disconnect --team T --user U --provider P [--url URL] [--json]

Asks the running service (--url, default http://<listen.address>:<listen.port>)
to disconnect the connection as its user would (DELETE
/api/connectors/{provider}): the tokens are revoked at the provider where
it can, deleted, and TOKEN_REVOKED is emitted. Needs
auth.jwt.hs256_secret_file to mint the user's session JWT.
)"},
    {{"service-tokens", ""}, R"(usage: connector-manager service-tokens create|list|revoke [OPTIONS]

  create   make a new service token, print it once, store only its hash
  list     the service tokens, stored and configured (never a token)
  revoke   revoke a stored token by name

Tokens in the database take effect on every running instance within
auth.service_token_poll_ms (2 s by default), without a restart; tokens in
the service file (auth.service_tokens) keep working beside them.
'connector-manager service-tokens SUB --help' says more.
)"},
    {{"service-tokens", "create"}, R"(usage: connector-manager service-tokens create --name NAME [--scopes S1,S2] [--json]

Creates a service token for the service NAME (1 to 64 of A-Z a-z 0-9 . _ -;
one live token per name) holding the scopes given (default FETCH_CONFIG,
which fetches tokens and calls the internal routes; PROXY calls providers
through /api/proxy; METRICS scrapes /metrics). Prints the token on
standard output, once: only its SHA-256 is stored. With --json prints
{"id","name","scopes","created_at","token"}. Services send it in the
X-Services-Token header.
)"},
    {{"service-tokens", "list"}, R"(usage: connector-manager service-tokens list [--all] [--json]

Lists the live service tokens: name, scopes, where each is kept
(database or config) and when it was created; --all adds the revoked
ones. Never a token or its hash.
)"},
    {{"service-tokens", "revoke"}, R"(usage: connector-manager service-tokens revoke --name NAME

Revokes the live stored token named NAME. Every instance refuses it
within auth.service_token_poll_ms. A token from the service file is
removed there instead (then reload or restart). Exit 1 when no live
stored token has that name.
)"},
    {{"kafka", ""}, R"(usage: connector-manager kafka parked|requeue [OPTIONS]

  parked    the events the Kafka brokers refused for good (too large, not
            authorized), which the relay parked so the rest flows
  requeue   send parked events again, once the cause is fixed

'connector-manager kafka SUB --help' says more.
)"},
    {{"kafka", "parked"}, R"(usage: connector-manager kafka parked [--limit N] [--json]

Lists the parked Kafka events, newest first, at most --limit (default
100): event id, team, topic, event type, librdkafka's reason, when it was
parked and, if an operator re-queued it, when. The type reads (pruned)
when its outbox row was deleted: it cannot be sent again. --json prints
{"parked":[...]} (event_type "" when pruned). Never a payload. Reads the
database directly.
)"},
    {{"kafka", "requeue"}, R"(usage: connector-manager kafka requeue --event ID | --all

Marks one parked event (--event, its event id) or every parked event
(--all) to be produced again. The relaying instance produces them within
about two events.poll_ms (with a fresh producer if its own refused
anything), outside the outbox's order (a consumer sees them after
later events of the same key), removes each from the parked list once a
broker acknowledged it, and parks it again with the new reason if it is
refused once more. Events whose outbox row was pruned are not sent. Exit
1 when nothing was waiting.
)"},
  };
  return all;
}

} // namespace

std::string help_for(const std::string& command, const std::string& subcommand) {
  if (command.empty())
    return overview;
  auto it = texts().find({command, subcommand});
  if (it == texts().end()) {
    // An unknown subcommand of a known command: the command's help.
    it = texts().find({command, ""});
    if (it == texts().end())
      return "";
  }
  return it->second + "\nOptions:" + config_option;
}

} // namespace cm::app
