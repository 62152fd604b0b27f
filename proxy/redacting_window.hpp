// Redaction of a body that passes through in pieces (a streamed answer):
// a credential split between two pieces must not slip through, so the last
// (longest form - 1) bytes are held back until the next piece, or the end,
// shows whether they begin a credential.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cm::proxy {

class redacting_window {
public:
  /// `forms`: as for redact() (proxy/headers.hpp).
  explicit redacting_window(std::vector<std::string> forms);

  /// Takes the next piece; returns what may go out now, redacted.
  std::string push(std::string_view piece);

  /// The end: returns what was held back, redacted.
  std::string finish();

  /// Credentials replaced so far.
  size_t redactions() const { return redactions_; }

private:
  std::vector<std::string> forms_;
  size_t hold_ = 0;
  std::string pending_;
  size_t redactions_ = 0;
};

} // namespace cm::proxy
