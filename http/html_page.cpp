#include "http/html_page.hpp"

namespace cm::http {

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(ch);
    }
  }
  return out;
}

void add_page_headers(response& res) {
  res.headers.emplace_back("Content-Security-Policy",
                           "default-src 'none'; style-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'");
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  res.headers.emplace_back("Referrer-Policy", "no-referrer");
  res.headers.emplace_back("Cache-Control", "no-store");
}

response html_error_page(ec code, const std::string& message) {
  response res;
  res.status = http_status(code);
  res.content_type = "text/html; charset=utf-8";
  res.error_code = to_string(code);
  res.body = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             "<title>Connection failed</title>\n"
             "<link rel=\"stylesheet\" href=\"/connect/connect.css\">\n</head>\n<body>\n"
             "<main id=\"error\" class=\"page-message\" data-code=\"" +
             html_escape(to_string(code)) +
             "\">\n<h1>Connection failed</h1>\n<p id=\"message\">" + html_escape(message) +
             "</p>\n<p class=\"hint\">Nothing was connected. Close this window and start "
             "again from the application (error code <code>" +
             html_escape(to_string(code)) + "</code>).</p>\n</main>\n</body>\n</html>\n";
  add_page_headers(res);
  return res;
}

} // namespace cm::http
