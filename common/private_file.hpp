// Files that hold key material (the keyring, the session-token signing
// secret): read whole, and refused when their mode lets the group or others
// in, as ssh refuses a private key. Whoever can read such a file can sign
// session tokens or decrypt every stored credential, so a loose mode is a
// configuration error, not a warning.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace cm {

class private_file_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The whole content of `path`. Throws private_file_error when it cannot be
/// opened or read, is larger than `max_bytes`, or any group or other
/// permission bit is set (checked on the opened descriptor, so the file
/// read is the file checked). Messages name the file as "<what> <path>"
/// and never quote its content.
std::string read_private_file(const std::string& path, const std::string& what,
                              size_t max_bytes = 1 << 20);

} // namespace cm
