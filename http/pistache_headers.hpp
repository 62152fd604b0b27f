// A response header whose name is chosen at run time. Pistache 0.0.5 writes
// only typed headers (raw ones added with addRaw are silently dropped), so
// every header we add goes through this class.
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include <pistache/http_header.h>

namespace cm::http {

class named_header : public Pistache::Http::Header::Header {
public:
  named_header(std::string name, std::string value)
    : name_(std::move(name)), value_(std::move(value)) {}
  const char* name() const override { return name_.c_str(); }
  void parse(const std::string& data) override { value_ = data; }
  void write(std::ostream& os) const override { os << value_; }
  uint64_t hash() const override { return std::hash<std::string>{}(name_); }

private:
  std::string name_;
  std::string value_;
};

} // namespace cm::http
