// One PostgreSQL connection (blocking libpq) with named prepared statements
// and reconnection with backoff. Used only from inside the storage actor,
// which is detached so blocking here never stalls the scheduler.
#pragma once

#include <chrono>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>

#include "common/error.hpp"
#include "config/service_config.hpp"

namespace cm::storage {

/// A failed database operation. `code` is `unavailable` for connection
/// trouble and timeouts, `conflict` for unique violations and serialization
/// failures, `internal` otherwise. `what()` carries SQLSTATE and PostgreSQL's
/// primary message only (never DETAIL, which may quote row values).
class db_error : public std::runtime_error {
public:
  db_error(ec code, std::string sqlstate, const std::string& message)
    : std::runtime_error(message), code(code), sqlstate(std::move(sqlstate)) {}
  ec code;
  std::string sqlstate;
};

/// A named SQL statement, prepared once per connection on first use.
struct statement {
  const char* name;
  const char* sql;
};

/// One bound parameter: NULL, text, or binary (bytea).
struct param {
  std::optional<std::string> value;
  bool binary = false;

  static param null() { return {}; }
  static param text(std::string v) { return {std::move(v), false}; }
  static param bytes(std::string v) { return {std::move(v), true}; }
};

/// Owns a PGresult.
class result {
public:
  explicit result(PGresult* r = nullptr) : r_(r) {}
  result(result&& other) noexcept : r_(other.r_) { other.r_ = nullptr; }
  result& operator=(result&& other) noexcept {
    std::swap(r_, other.r_);
    return *this;
  }
  result(const result&) = delete;
  result& operator=(const result&) = delete;
  ~result() { if (r_) PQclear(r_); }

  int rows() const { return r_ ? PQntuples(r_) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string_view text(int row, int col) const {
    return {PQgetvalue(r_, row, col), static_cast<size_t>(PQgetlength(r_, row, col))};
  }
  int64_t integer(int row, int col) const;
  /// Decodes a bytea column returned in text (hex) format.
  std::string bytes(int row, int col) const;
  /// Number of rows an UPDATE/DELETE touched.
  int64_t affected() const;

private:
  PGresult* r_;
};

class database {
public:
  explicit database(config::database_config cfg);
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  /// Makes sure a live connection exists. While PostgreSQL is away, a new
  /// attempt is made only after the backoff delay; calls in between fail at
  /// once. Throws db_error(unavailable).
  void ensure_connected();

  /// Runs a prepared statement. Throws db_error.
  result exec(const statement& stmt, const std::vector<param>& params = {});

  /// Runs SQL text with no parameters (may hold several statements).
  result exec_script(const std::string& sql);

  /// Runs `copy_sql` (a `COPY … FROM STDIN`) and sends `rows` in COPY's
  /// text format: the cheapest way to append many rows at once. Throws
  /// db_error; nothing is kept when any row is refused.
  void copy_in(const std::string& copy_sql, std::string_view rows);

  /// True when the last attempt left a usable connection.
  bool connected() const;

  /// Counts the connections made: a change means a new session, which
  /// holds none of the old one's advisory locks (the Kafka relay checks).
  uint64_t sessions() const { return sessions_; }

  /// libpq's reason the last connection attempt failed, on one line and
  /// never with the password ("" before any failure).
  const std::string& last_connect_error() const { return last_connect_error_; }

  /// Drops the connection (tests; shutdown).
  void disconnect();

  /// RAII transaction: BEGIN on construction, ROLLBACK unless committed.
  /// Inside another transaction it joins it: the outermost one commits or
  /// rolls back, so composed operations stay atomic.
  class transaction {
  public:
    explicit transaction(database& db);
    ~transaction();
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    void commit();
  private:
    database& db_;
    bool nested_;
    bool done_ = false;
  };

private:
  [[noreturn]] void fail_from(PGresult* res, const char* what);
  void mark_broken();

  config::database_config cfg_;
  PGconn* conn_ = nullptr;
  std::set<std::string> prepared_;
  /// Inside BEGIN…COMMIT a lost connection must fail the transaction, not
  /// silently reconnect and go on in autocommit.
  bool in_transaction_ = false;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_;
  std::minstd_rand rng_;
  std::string last_connect_error_;
  uint64_t sessions_ = 0;
};

} // namespace cm::storage
