// A string holding a credential. Its buffer is wiped when it is destroyed or
// overwritten, and `to_string` shows only a placeholder, so printing a
// message that holds one does not leak it.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <sodium.h>

namespace cm {

class secret {
public:
  secret() = default;
  explicit secret(std::string value) : value_(std::move(value)) {}
  secret(const secret&) = default;
  secret(secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  secret& operator=(const secret& other) {
    if (this != &other) { wipe(); value_ = other.value_; }
    return *this;
  }
  secret& operator=(secret&& other) noexcept {
    if (this != &other) { wipe(); value_ = std::move(other.value_); other.wipe(); }
    return *this;
  }
  ~secret() { wipe(); }

  std::string_view view() const { return value_; }
  const std::string& reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  size_t size() const { return value_.size(); }
  friend bool operator==(const secret& a, const secret& b) { return a.value_ == b.value_; }
  friend bool operator!=(const secret& a, const secret& b) { return !(a == b); }

  /// Serialization for actor messages (the value travels, e.g. to a remote
  /// token client).
  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, secret& x) {
    return f(x.value_);
  }

private:
  void wipe() {
    if (!value_.empty())
      sodium_memzero(value_.data(), value_.size());
    value_.clear();
  }
  std::string value_;
};

inline std::string to_string(const secret&) { return "[secret]"; }

} // namespace cm
