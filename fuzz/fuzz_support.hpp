// What the fuzz targets share: the shipped provider catalog, a fixed test
// keyring, quiet logs, a scratch directory, base64url and a check that
// aborts (so libFuzzer records the input) when a property does not hold.
#pragma once

#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include "common/log.hpp"
#include "config/provider_catalog.hpp"
#include "storage/keyring.hpp"

namespace cm::fuzz {

/// A property the code under test promises. Failing it is a finding, like a
/// crash: libFuzzer keeps the input as a reproducer.
#define CM_FUZZ_CHECK(cond, what)                                                       \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "fuzz property failed: %s (%s:%d)\n", what, __FILE__, __LINE__); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Log lines go nowhere: a fuzzer prints its own progress on stderr.
inline void quiet_logs() {
  static std::FILE* sink = std::fopen("/dev/null", "w");
  if (sink != nullptr)
    log::set_sink(sink);
  log::set_level(log::level::error);
}

/// config/providers.yaml as the service ships it, loaded once.
inline const config::provider_catalog& shipped_catalog() {
  static const config::provider_catalog catalog =
    config::load_provider_catalog(std::string(CM_SOURCE_DIR) + "/config/providers.yaml");
  return catalog;
}

/// A keyring with keys 1 and 2 (2 active) made of fixed bytes: fuzz runs are
/// reproducible, and nothing here protects real data.
inline std::shared_ptr<const storage::keyring> test_keyring() {
  static const std::shared_ptr<const storage::keyring> keys = [] {
    std::string text = "# fuzz keyring\nactive 2\n";
    for (int id = 1; id <= 2; ++id) {
      unsigned char raw[storage::master_key_bytes];
      std::memset(raw, 0x40 + id, sizeof raw);
      char b64[sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_ORIGINAL)];
      sodium_bin2base64(b64, sizeof b64, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
      text += "key " + std::to_string(id) + " " + b64 + "\n";
    }
    return storage::keyring::parse(text);
  }();
  return keys;
}

/// A directory for files the code under test wants to read (key files),
/// under $TMPDIR (scripts/fuzz points it into the run's directory), removed
/// when the process exits normally.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/cm-fuzz-keys.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      std::abort();
    std::string made = tmpl;
    static std::string to_remove = made;
    std::atexit([] { std::system(("rm -rf '" + to_remove + "'").c_str()); });
    return made;
  }();
  return dir;
}

/// Mode 0600: the service refuses key files others may read.
inline std::string write_scratch_file(const std::string& name, const std::string& content) {
  auto path = scratch_dir() + "/" + name;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  ::chmod(path.c_str(), 0600);
  return path;
}

inline std::string base64url(std::string_view in) {
  std::string out(sodium_base64_ENCODED_LEN(in.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                  '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(in.data()),
                    in.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::strlen(out.c_str()));
  return out;
}

/// Splits "first\nrest" at the first newline (rest empty when there is none).
inline std::pair<std::string, std::string> split_line(std::string_view in) {
  auto nl = in.find('\n');
  if (nl == std::string_view::npos)
    return {std::string(in), std::string{}};
  return {std::string(in.substr(0, nl)), std::string(in.substr(nl + 1))};
}

inline bool printable_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e)
      return false;
  return true;
}

} // namespace cm::fuzz
