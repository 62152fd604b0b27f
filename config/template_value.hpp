// What a value may be to fill a {placeholder} in a provider URL (a Shopify
// shop, a Microsoft tenant, a GitHub client id in a revocation path), from
// whatever source: a caller's query or body, a team's connector
// configuration, this deployment's service file, the catalog's defaults.
// Every URL template is filled through oauth::expand_url, which applies
// this rule; the places that take such a value in apply it again, to
// refuse it with a message naming the field before anything is stored.
//
// A value must leave the URL's shape as the catalog wrote it: it fills one
// host label or one path segment, never more. libcurl (and most servers)
// resolve "." and ".." path segments, so `tenant=..` sent the code, the
// PKCE verifier and the client secret of a Microsoft flow to another path
// on the provider's host; "/", "\", "?", "#", "@", ":" and "%" (and with it
// every encoded form of these) would move the value into another segment,
// the query, the fragment, the credentials or the port.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cm::config {

/// Longest value a URL template parameter may have. libstdc++'s std::regex
/// matcher recurses once per character: a 30,000-character value overflows
/// an 8 MiB stack, and such a value arrives in one query string. Real values
/// are far shorter (a DNS label is at most 63 bytes, a domain 253).
inline constexpr size_t max_template_value_bytes = 256;

/// Why `value` may not fill a URL placeholder at all, whatever its pattern,
/// or "" when its shape is safe: 1 to max_template_value_bytes characters,
/// each an RFC 3986 unreserved one (letters, digits, "-", ".", "_", "~"),
/// and not a dot segment ("." or "..").
std::string template_value_shape_problem(std::string_view value);

/// Why `value` may not fill a placeholder declared with the catalog pattern
/// `pattern` (an ECMAScript regular expression; "" for none), or "" when it
/// may: its shape first (template_value_shape_problem), then the pattern.
std::string template_value_problem(const std::string& value, const std::string& pattern);

} // namespace cm::config
