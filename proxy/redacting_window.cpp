#include "proxy/redacting_window.hpp"

#include <algorithm>

#include "proxy/headers.hpp"

namespace cm::proxy {

redacting_window::redacting_window(std::vector<std::string> forms) : forms_(std::move(forms)) {
  for (auto& form : forms_)
    hold_ = std::max(hold_, form.empty() ? 0 : form.size() - 1);
}

std::string redacting_window::push(std::string_view piece) {
  pending_.append(piece);
  // Every form that ends inside pending_ is replaced here; one that starts
  // in the last hold_ bytes may still be completed by the next piece.
  redactions_ += redact(pending_, forms_);
  if (pending_.size() <= hold_)
    return {};
  auto release = pending_.size() - hold_;
  std::string out = pending_.substr(0, release);
  pending_.erase(0, release);
  return out;
}

std::string redacting_window::finish() {
  redactions_ += redact(pending_, forms_);
  std::string out;
  out.swap(pending_);
  return out;
}

} // namespace cm::proxy
