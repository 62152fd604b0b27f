#include "storage/keyring.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <vector>

#include <sodium.h>

#include "common/private_file.hpp"

namespace cm::storage {

namespace {

constexpr char kdf_context[crypto_kdf_CONTEXTBYTES + 1] = "cmkeyrng";

/// A buffer in sodium_malloc memory, wiped and freed on destruction.
class guarded_buffer {
public:
  explicit guarded_buffer(size_t n) : size_(n), data_(static_cast<unsigned char*>(sodium_malloc(n))) {
    if (data_ == nullptr)
      throw crypto_error("sodium_malloc failed");
  }
  ~guarded_buffer() { sodium_free(data_); }
  guarded_buffer(const guarded_buffer&) = delete;
  guarded_buffer& operator=(const guarded_buffer&) = delete;
  unsigned char* data() { return data_; }
  size_t size() const { return size_; }
private:
  size_t size_;
  unsigned char* data_;
};

std::string read_whole_file(const std::string& path) {
  try {
    return read_private_file(path, "key file");
  } catch (const private_file_error& e) {
    throw crypto_error(e.what());
  }
}

std::string fresh_key_line(uint32_t id) {
  unsigned char key[master_key_bytes];
  crypto_kdf_keygen(key);
  char b64[sodium_base64_ENCODED_LEN(master_key_bytes, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(b64, sizeof b64, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
  sodium_memzero(key, sizeof key);
  std::string line = "key " + std::to_string(id) + " " + b64 + "\n";
  sodium_memzero(b64, sizeof b64);
  return line;
}

void write_file_0600(const std::string& path, const std::string& text, bool exclusive) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC);
  int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0)
    throw crypto_error("cannot create key file " + path + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  size_t put = 0;
  while (put < text.size()) {
    auto n = ::write(fd, text.data() + put, text.size() - put);
    if (n <= 0) {
      ::close(fd);
      throw crypto_error("cannot write key file " + path);
    }
    put += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    throw crypto_error("cannot sync key file " + path);
  }
  ::close(fd);
}

} // namespace

void ensure_sodium() {
  if (sodium_init() < 0)
    throw crypto_error("libsodium failed to initialize");
}

keyring::~keyring() {
  for (auto& [id, e] : keys_) {
    sodium_free(e.column_key);
    sodium_free(e.state_key);
  }
}

std::shared_ptr<const keyring> keyring::parse(const std::string& text) {
  ensure_sodium();
  std::shared_ptr<keyring> result{new keyring};
  bool have_active = false;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  guarded_buffer master{master_key_bytes};
  while (std::getline(in, line)) {
    ++line_no;
    auto where = "keyring line " + std::to_string(line_no) + ": ";
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream fields(line);
    std::string kind;
    fields >> kind;
    if (kind == "active") {
      long id = 0;
      if (!(fields >> id) || id <= 0 || id > UINT32_MAX)
        throw crypto_error(where + "expected 'active <id>'");
      result->active_id_ = static_cast<uint32_t>(id);
      have_active = true;
    } else if (kind == "key") {
      long id = 0;
      std::string b64;
      if (!(fields >> id >> b64) || id <= 0 || id > UINT32_MAX)
        throw crypto_error(where + "expected 'key <id> <base64>'");
      size_t len = 0;
      int rc = sodium_base642bin(master.data(), master.size(), b64.data(), b64.size(), nullptr,
                                 &len, nullptr, sodium_base64_VARIANT_ORIGINAL);
      sodium_memzero(b64.data(), b64.size());
      if (rc != 0 || len != master_key_bytes)
        throw crypto_error(where + "key is not 32 bytes of base64");
      auto key_id = static_cast<uint32_t>(id);
      if (result->keys_.count(key_id))
        throw crypto_error(where + "duplicate key id " + std::to_string(key_id));
      entry e;
      e.column_key = static_cast<unsigned char*>(sodium_malloc(subkey_bytes));
      e.state_key = static_cast<unsigned char*>(sodium_malloc(subkey_bytes));
      if (e.column_key == nullptr || e.state_key == nullptr) {
        sodium_free(e.column_key);
        sodium_free(e.state_key);
        throw crypto_error("sodium_malloc failed");
      }
      crypto_kdf_derive_from_key(e.column_key, subkey_bytes,
                                 static_cast<uint64_t>(key_purpose::column_encryption),
                                 kdf_context, master.data());
      crypto_kdf_derive_from_key(e.state_key, subkey_bytes,
                                 static_cast<uint64_t>(key_purpose::state_hashing),
                                 kdf_context, master.data());
      sodium_mprotect_readonly(e.column_key);
      sodium_mprotect_readonly(e.state_key);
      result->keys_[key_id] = e;
    } else {
      throw crypto_error(where + "expected 'active' or 'key'");
    }
    sodium_memzero(line.data(), line.size());
  }
  if (!have_active)
    throw crypto_error("keyring names no active key");
  if (!result->has_key(result->active_id_))
    throw crypto_error("keyring's active key " + std::to_string(result->active_id_) +
                       " is not in the file");
  return result;
}

std::shared_ptr<const keyring> keyring::load(const std::string& path) {
  auto text = read_whole_file(path);
  try {
    auto result = parse(text);
    sodium_memzero(text.data(), text.size());
    return result;
  } catch (const crypto_error& e) {
    sodium_memzero(text.data(), text.size());
    throw crypto_error(path + ": " + e.what());
  }
}

void keyring::generate_file(const std::string& path) {
  ensure_sodium();
  std::string text = "# connector-manager keyring: keep outside the database, mode 0600.\n"
                     "# Rotate: keygen --add, --activate, rekey, --retire (docs/STORAGE.md).\n"
                     "active 1\n";
  text += fresh_key_line(1);
  write_file_0600(path, text, true);
  sodium_memzero(text.data(), text.size());
}

namespace {

/// Writes `text` next to `path` and renames it over: readers see the old
/// file or the new one, never half of either.
void replace_file(const std::string& path, std::string& text) {
  auto tmp = path + ".tmp";
  write_file_0600(tmp, text, false);
  sodium_memzero(text.data(), text.size());
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw crypto_error("cannot replace key file " + path + ": " + std::strerror(errno));
}

/// The id a "key <id> ..." line names, or 0 for other lines.
uint32_t key_line_id(const std::string& line) {
  std::istringstream fields(line);
  std::string kind;
  long id = 0;
  if (!(fields >> kind) || kind != "key" || !(fields >> id) || id <= 0 || id > UINT32_MAX)
    return 0;
  return static_cast<uint32_t>(id);
}

/// Rewrites the file line by line through `edit` (which may change or drop
/// a line), then checks that the result still parses before replacing.
template <class Edit>
void rewrite_file(const std::string& path, std::string extra, Edit edit) {
  auto text = read_whole_file(path);
  std::istringstream in(text);
  std::string out, line;
  while (std::getline(in, line)) {
    if (edit(line))
      out += line + "\n";
    sodium_memzero(line.data(), line.size());
  }
  out += extra;
  sodium_memzero(extra.data(), extra.size());
  sodium_memzero(text.data(), text.size());
  try {
    keyring::parse(out);
  } catch (const crypto_error&) {
    sodium_memzero(out.data(), out.size());
    throw;
  }
  replace_file(path, out);
}

} // namespace

uint32_t keyring::add_key_to_file(const std::string& path, bool make_active) {
  uint32_t new_id = 0;
  {
    auto text = read_whole_file(path);
    auto existing = parse(text);
    sodium_memzero(text.data(), text.size());
    for (auto& [id, e] : existing->keys_)
      new_id = std::max(new_id, id);
  }
  ++new_id;
  rewrite_file(path, fresh_key_line(new_id), [&](std::string& line) {
    if (make_active && line.rfind("active", 0) == 0)
      line = "active " + std::to_string(new_id);
    return true;
  });
  return new_id;
}

void keyring::activate_key_in_file(const std::string& path, uint32_t id) {
  {
    auto text = read_whole_file(path);
    auto existing = parse(text);
    sodium_memzero(text.data(), text.size());
    if (!existing->has_key(id))
      throw crypto_error("key " + std::to_string(id) + " is not in " + path);
  }
  rewrite_file(path, "", [&](std::string& line) {
    if (line.rfind("active", 0) == 0)
      line = "active " + std::to_string(id);
    return true;
  });
}

void keyring::remove_key_from_file(const std::string& path, uint32_t id) {
  {
    auto text = read_whole_file(path);
    auto existing = parse(text);
    sodium_memzero(text.data(), text.size());
    if (!existing->has_key(id))
      throw crypto_error("key " + std::to_string(id) + " is not in " + path);
    if (existing->active_id() == id)
      throw crypto_error("key " + std::to_string(id) + " is the active key; activate another first");
  }
  rewrite_file(path, "", [&](const std::string& line) { return key_line_id(line) != id; });
}

std::vector<uint32_t> keyring::key_ids() const {
  std::vector<uint32_t> ids;
  for (auto& [id, e] : keys_)
    ids.push_back(id);
  return ids;
}

const unsigned char* keyring::subkey(uint32_t id, key_purpose purpose) const {
  auto it = keys_.find(id);
  if (it == keys_.end())
    return nullptr;
  return purpose == key_purpose::column_encryption ? it->second.column_key
                                                   : it->second.state_key;
}

} // namespace cm::storage
