// Service-account keys a hostile member could send: RSA private keys built
// from chosen parts (OpenSSL does not check parts given to it, and writes
// them as PKCS#8 PEM like any key), and the Google JSON key file around
// them. Generating a 30,000-bit key would take hours; a modulus of random
// bits with CRT values that do not match costs nothing to build and seconds
// to sign with.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace cm::test {

/// A Google service-account key file holding `private_pem`.
std::string service_account_file(const std::string& private_pem, const std::string& client_email);

/// A `bits`-bit modulus of random bits, a random private exponent and small
/// bogus primes and CRT values: OpenSSL signs with it by a full-size
/// exponentiation (seconds at 30,000 bits).
std::string oversized_bogus_crt_pem(int bits);

/// `good_pem` (a real RSA key) with its first CRT exponent off by two: the
/// signature still comes out right (OpenSSL notices and falls back to the
/// private exponent), but the key is not consistent.
std::string bogus_crt_pem(const std::string& good_pem);

/// A 2048-bit modulus 3·q with a 2046-bit q: primes out of proportion.
std::string unbalanced_primes_pem();

/// A P-256 key, PKCS#8.
std::string ec_pem();

/// A real RSA key of `bits` bits, PKCS#8 encrypted under a passphrase
/// ("-----BEGIN ENCRYPTED PRIVATE KEY-----").
std::string encrypted_pem(int bits);

} // namespace cm::test
