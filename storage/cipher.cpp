#include "storage/cipher.hpp"

#include <sodium.h>

namespace cm::storage {

namespace {

/// Sealed before team_id joined the binding (read while allowed).
constexpr unsigned char format_unbound = 0x01;
/// Bound to the team: every write.
constexpr unsigned char format_team_bound = 0x02;
constexpr size_t header_bytes = 1 + 4;
constexpr size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;

void append_field(std::string& out, std::string_view field) {
  auto n = static_cast<uint32_t>(field.size());
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((n >> shift) & 0xff));
  out.append(field.data(), field.size());
}

/// Header bytes followed by length-prefixed binding fields: unambiguous, so
/// ("ab","c") and ("a","bc") differ. The header's format byte says whether
/// the team is among them.
std::string associated_data(std::string_view header, const cipher_binding& where) {
  std::string ad{header};
  append_field(ad, where.table);
  if (static_cast<unsigned char>(header[0]) == format_team_bound)
    append_field(ad, where.team_id);
  append_field(ad, where.row_id);
  append_field(ad, where.user_id);
  append_field(ad, where.provider);
  append_field(ad, where.column);
  return ad;
}

} // namespace

int column_cipher::format_of(std::string_view blob) {
  if (blob.size() < header_bytes)
    return 0;
  auto format = static_cast<unsigned char>(blob[0]);
  return format == format_unbound || format == format_team_bound ? format : 0;
}

uint32_t column_cipher::key_id_of(std::string_view blob) {
  if (format_of(blob) == 0)
    return 0;
  uint32_t id = 0;
  for (size_t i = 1; i < header_bytes; ++i)
    id = (id << 8) | static_cast<unsigned char>(blob[i]);
  return id;
}

std::string column_cipher::encrypt(std::string_view plaintext, const cipher_binding& where) const {
  auto id = keys_->active_id();
  auto key = keys_->subkey(id, key_purpose::column_encryption);
  if (key == nullptr)
    throw crypto_error("active key is missing");
  std::string out(header_bytes + nonce_bytes + plaintext.size() + tag_bytes, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  bytes[0] = format_team_bound;
  for (int i = 0; i < 4; ++i)
    bytes[1 + i] = static_cast<unsigned char>((id >> (24 - 8 * i)) & 0xff);
  randombytes_buf(bytes + header_bytes, nonce_bytes);
  auto ad = associated_data(out.substr(0, header_bytes), where);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
    bytes + header_bytes + nonce_bytes, &written,
    reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
    reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
    bytes + header_bytes, key);
  out.resize(header_bytes + nonce_bytes + written);
  return out;
}

secret column_cipher::decrypt(std::string_view blob, const cipher_binding& where) const {
  if (blob.size() < header_bytes + nonce_bytes + tag_bytes)
    throw crypto_error("ciphertext is truncated");
  auto format = format_of(blob);
  if (format == 0)
    throw crypto_error("ciphertext has an unknown format");
  // Checked before any work: a refused format-1 value is refused whatever
  // its key and contents.
  if (format == format_unbound && !unbound_allowed())
    throw crypto_error("ciphertext is of the retired team-unbound format");
  auto id = key_id_of(blob);
  auto key = keys_->subkey(id, key_purpose::column_encryption);
  if (key == nullptr)
    throw crypto_error("ciphertext names unknown key " + std::to_string(id));
  auto ad = associated_data(blob.substr(0, header_bytes), where);
  auto* bytes = reinterpret_cast<const unsigned char*>(blob.data());
  auto ct_len = blob.size() - header_bytes - nonce_bytes;
  std::string plain(ct_len - tag_bytes, '\0');
  unsigned long long written = 0;
  int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
    reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr,
    bytes + header_bytes + nonce_bytes, ct_len,
    reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), bytes + header_bytes, key);
  if (rc != 0) {
    sodium_memzero(plain.data(), plain.size());
    throw crypto_error("ciphertext does not authenticate");
  }
  plain.resize(written);
  return secret{std::move(plain)};
}

} // namespace cm::storage
