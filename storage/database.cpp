#include "storage/database.hpp"

#include <algorithm>
#include <cstdlib>

#include "common/log.hpp"

namespace cm::storage {

namespace {

constexpr const char* component = "storage";

/// SQLSTATE classes that mean "the database is not there right now".
bool is_unavailable_state(std::string_view state) {
  return state.rfind("08", 0) == 0        // connection exception
         || state == "57P01"              // admin_shutdown
         || state == "57P02"              // crash_shutdown
         || state == "57P03"              // cannot_connect_now
         || state == "57014"              // query_canceled (statement timeout)
         || state == "53300";             // too_many_connections
}

bool is_conflict_state(std::string_view state) {
  return state == "23505" || state == "40001" || state == "40P01";
}

/// First line of a libpq message, so a multi-line DETAIL never travels on.
std::string first_line(const char* text) {
  std::string s = text ? text : "";
  auto nl = s.find('\n');
  if (nl != std::string::npos)
    s.resize(nl);
  return s;
}

/// libpq's reason for a failed connection, on one line, with the
/// password of `url` (if it holds one) blanked out: libpq does not quote
/// passwords, but a reason may quote the connection string it could not
/// parse.
std::string connect_failure_reason(PGconn* conn, const std::string& url) {
  std::string reason = conn ? PQerrorMessage(conn) : "out of memory";
  std::string line;
  for (char c : reason) {
    if (c == '\n' || c == '\t' || c == '\r') {
      if (!line.empty() && line.back() != ' ')
        line += ' ';
    } else {
      line += c;
    }
  }
  while (!line.empty() && line.back() == ' ')
    line.pop_back();
  char* parse_error = nullptr;
  if (PQconninfoOption* options = PQconninfoParse(url.c_str(), &parse_error)) {
    for (auto* o = options; o->keyword != nullptr; ++o) {
      if (std::string_view(o->keyword) != "password" || o->val == nullptr || !*o->val)
        continue;
      std::string password = o->val;
      for (auto at = line.find(password); at != std::string::npos; at = line.find(password))
        line.replace(at, password.size(), "***");
    }
    PQconninfoFree(options);
  }
  if (parse_error != nullptr) {
    // libpq's reason may quote the part of the string it could not parse,
    // which may be the password.
    PQfreemem(parse_error);
    return "database.url is not a connection string libpq can parse";
  }
  return line.empty() ? "no reason given" : line;
}

} // namespace

int64_t result::integer(int row, int col) const {
  auto t = text(row, col);
  return std::strtoll(std::string(t).c_str(), nullptr, 10);
}

std::string result::bytes(int row, int col) const {
  size_t len = 0;
  auto* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col)), &len);
  if (raw == nullptr)
    throw db_error(ec::internal, "", "cannot decode bytea");
  std::string out(reinterpret_cast<const char*>(raw), len);
  PQfreemem(raw);
  return out;
}

int64_t result::affected() const {
  const char* n = r_ ? PQcmdTuples(r_) : "";
  return (n && *n) ? std::strtoll(n, nullptr, 10) : 0;
}

database::database(config::database_config cfg)
  : cfg_(std::move(cfg)), backoff_(cfg_.reconnect_min_backoff),
    rng_(std::random_device{}()) {}

database::~database() { disconnect(); }

bool database::connected() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

void database::disconnect() {
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  prepared_.clear();
}

void database::mark_broken() {
  disconnect();
  // Full jitter between half and all of the current backoff; then double it.
  std::uniform_int_distribution<long> jitter(backoff_.count() / 2, backoff_.count());
  next_attempt_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(jitter(rng_));
  backoff_ = std::min(backoff_ * 2, cfg_.reconnect_max_backoff);
}

void database::ensure_connected() {
  if (conn_ != nullptr) {
    // Reads whatever the server sent while we were idle: a terminated
    // backend (restart, failover) shows up here instead of on a query.
    if (PQconsumeInput(conn_) == 1 && PQstatus(conn_) == CONNECTION_OK)
      return;
    log::warn(component, "database connection lost");
    mark_broken();
    if (in_transaction_)
      throw db_error(ec::unavailable, "", "database connection lost during a transaction");
    next_attempt_ = std::chrono::steady_clock::now(); // first retry at once
  }
  if (std::chrono::steady_clock::now() < next_attempt_)
    throw db_error(ec::unavailable, "", "database unavailable (waiting to reconnect)");
  // Connection parameters are passed as keywords so the configured string
  // stays one opaque value (it may hold a password and is never logged).
  std::string options = "-c statement_timeout=" + std::to_string(cfg_.statement_timeout_ms);
  std::string timeout = std::to_string(cfg_.connect_timeout_s);
  const char* keys[] = {"dbname", "connect_timeout", "options", "application_name",
                        "keepalives", "keepalives_idle", nullptr};
  const char* values[] = {cfg_.url.c_str(), timeout.c_str(), options.c_str(),
                          "connector-manager", "1", "30", nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
    last_connect_error_ = connect_failure_reason(conn_, cfg_.url);
    log::warn(component, "cannot connect to the database",
              {{"retry_in_ms", backoff_.count()}, {"reason", last_connect_error_}});
    mark_broken();
    throw db_error(ec::unavailable, "", "database unavailable");
  }
  // Server notices ("relation already exists, skipping") would otherwise be
  // printed raw on stderr, breaking the one-JSON-object-per-line log.
  PQsetNoticeProcessor(
    conn_, [](void*, const char* message) {
      log::debug(component, "postgres notice", {{"notice", first_line(message)}});
    },
    nullptr);
  backoff_ = cfg_.reconnect_min_backoff;
  ++sessions_;
  log::info(component, "connected to the database");
}

void database::fail_from(PGresult* res, const char* what) {
  std::string state;
  std::string message;
  if (res != nullptr) {
    const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    state = s ? s : "";
    message = first_line(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    PQclear(res);
  }
  bool lost = conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK;
  if (message.empty() && conn_ != nullptr)
    message = first_line(PQerrorMessage(conn_));
  ec code = ec::internal;
  if (lost || is_unavailable_state(state))
    code = ec::unavailable;
  else if (is_conflict_state(state))
    code = ec::conflict;
  log::warn(component, "database call failed",
            {{"statement", what}, {"sqlstate", state}, {"error", message}, {"lost", lost}});
  if (lost)
    mark_broken();
  throw db_error(code, state, std::string(what) + ": " + (state.empty() ? "" : state + " ") + message);
}

result database::exec(const statement& stmt, const std::vector<param>& params) {
  ensure_connected();
  if (prepared_.count(stmt.name) == 0) {
    PGresult* res = PQprepare(conn_, stmt.name, stmt.sql, 0, nullptr);
    if (res == nullptr || PQresultStatus(res) != PGRES_COMMAND_OK)
      fail_from(res, stmt.name);
    PQclear(res);
    prepared_.insert(stmt.name);
  }
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (auto& p : params) {
    values.push_back(p.value ? p.value->data() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  PGresult* res = PQexecPrepared(conn_, stmt.name, static_cast<int>(params.size()),
                                 values.data(), lengths.data(), formats.data(), 0);
  auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    fail_from(res, stmt.name);
  return result{res};
}

result database::exec_script(const std::string& sql) {
  ensure_connected();
  PGresult* res = PQexec(conn_, sql.c_str());
  auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    fail_from(res, "script");
  return result{res};
}

void database::copy_in(const std::string& copy_sql, std::string_view rows) {
  ensure_connected();
  PGresult* res = PQexec(conn_, copy_sql.c_str());
  if (res == nullptr || PQresultStatus(res) != PGRES_COPY_IN)
    fail_from(res, "copy");
  PQclear(res);
  // libpq takes the data in pieces of at most INT_MAX bytes.
  constexpr size_t piece = 1 << 20;
  for (size_t at = 0; at < rows.size(); at += piece) {
    auto n = std::min(piece, rows.size() - at);
    if (PQputCopyData(conn_, rows.data() + at, static_cast<int>(n)) != 1) {
      PQputCopyEnd(conn_, "client failed to send");
      break;
    }
  }
  PQputCopyEnd(conn_, nullptr);
  PGresult* last = nullptr;
  // Read every result: the COPY's own, then the end of the command.
  while (PGresult* next = PQgetResult(conn_)) {
    if (last != nullptr)
      PQclear(last);
    last = next;
  }
  if (last == nullptr || PQresultStatus(last) != PGRES_COMMAND_OK)
    fail_from(last, "copy");
  PQclear(last);
}

database::transaction::transaction(database& db) : db_(db), nested_(db.in_transaction_) {
  if (nested_)
    return;
  db_.exec_script("BEGIN");
  db_.in_transaction_ = true;
}

database::transaction::~transaction() {
  if (nested_)
    return;
  db_.in_transaction_ = false;
  if (!done_ && db_.connected()) {
    PGresult* res = PQexec(db_.conn_, "ROLLBACK");
    if (res)
      PQclear(res);
  }
}

void database::transaction::commit() {
  if (nested_)
    return;
  db_.exec_script("COMMIT");
  done_ = true;
  db_.in_transaction_ = false;
}

} // namespace cm::storage
