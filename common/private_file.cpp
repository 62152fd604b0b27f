#include "common/private_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <sodium.h>

namespace cm {

std::string read_private_file(const std::string& path, const std::string& what,
                              size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw private_file_error("cannot open " + what + " " + path + ": " + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_on_exit{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0)
    throw private_file_error("cannot stat " + what + " " + path);
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    throw private_file_error(what + " " + path +
                             " is accessible by group or others; chmod 600 it");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    throw private_file_error(what + " " + path + " is too large");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    auto n = ::read(fd, text.data() + got, text.size() - got);
    if (n <= 0) {
      sodium_memzero(text.data(), text.size());
      throw private_file_error("cannot read " + what + " " + path);
    }
    got += static_cast<size_t>(n);
  }
  return text;
}

} // namespace cm
