// Column encryption cost: encrypt + decrypt of token-sized values through
// column_cipher (with associated data and key lookup) against the bare
// libsodium AEAD calls on the same data, measured in the same run.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sodium.h>

#include "storage/cipher.hpp"
#include "storage/keyring.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

template <class F>
double ops_per_second(F&& f, std::chrono::milliseconds budget, long max_ops) {
  auto start = clock_type::now();
  long ops = 0;
  while (ops < max_ops && clock_type::now() - start < budget) {
    f();
    ++ops;
  }
  std::chrono::duration<double> secs = clock_type::now() - start;
  return ops / secs.count();
}

} // namespace

int main() {
  cm::storage::ensure_sodium();
  const std::string keyring_text =
    "active 1\nkey 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
  auto keys = cm::storage::keyring::parse(keyring_text);
  cm::storage::column_cipher cipher{keys};
  std::printf("%-10s %16s %16s %8s\n", "bytes", "baseline ops/s", "cipher ops/s", "ratio");
  for (size_t size : {64, 512, 4096}) {
    std::string plain(size, 'x');
    cm::storage::cipher_binding where{"connector_tokens", "team", "row", "user", "github", "access_token"};
    unsigned char key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    randombytes_buf(key, sizeof key);
    std::string ct(size + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
    std::string out(size, '\0');
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    auto budget = std::chrono::milliseconds(700);
    double baseline = ops_per_second(
      [&] {
        unsigned long long n = 0;
        randombytes_buf(nonce, sizeof nonce);
        crypto_aead_xchacha20poly1305_ietf_encrypt(
          reinterpret_cast<unsigned char*>(ct.data()), &n,
          reinterpret_cast<const unsigned char*>(plain.data()), plain.size(), nullptr, 0,
          nullptr, nonce, key);
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(out.data()), &n, nullptr,
          reinterpret_cast<const unsigned char*>(ct.data()), ct.size(), nullptr, 0, nonce,
              key) != 0)
          std::abort();
      },
      budget, 5'000'000);
    double ours = ops_per_second(
      [&] {
        auto blob = cipher.encrypt(plain, where);
        auto back = cipher.decrypt(blob, where);
        if (back.size() != plain.size())
          std::abort();
      },
      budget, 5'000'000);
    std::printf("%-10zu %16.0f %16.0f %8.2f\n", size, baseline, ours, ours / baseline);
  }
  return 0;
}
