// Every link a reader follows resolves: relative links (and their
// #anchors) in the README and docs/, and the documents the shipped YAML
// files name in their comments.
#include <cctype>
#include <filesystem>
#include <map>
#include <sstream>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "tests/support/test_env.hpp"

using namespace cm::test;
namespace fs = std::filesystem;

namespace {

/// GitHub's anchor for a heading: lower case, only letters, digits,
/// spaces, "-" and "_" kept, spaces turned into "-".
std::string slug(const std::string& heading) {
  std::string out;
  for (unsigned char c : heading) {
    if (std::isalnum(c) || c == '-' || c == '_')
      out.push_back(static_cast<char>(std::tolower(c)));
    else if (c == ' ')
      out.push_back('-');
    else if (c >= 0x80)
      out.push_back(static_cast<char>(c)); // non-ASCII letters are kept
  }
  return out;
}

std::set<std::string> anchors_of(const std::string& path) {
  std::set<std::string> out;
  std::map<std::string, int> seen;
  bool in_code = false;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("```", 0) == 0)
      in_code = !in_code;
    if (in_code || line.empty() || line[0] != '#')
      continue;
    auto text = line.substr(line.find_first_not_of('#'));
    text = text.substr(text.find_first_not_of(' '));
    auto s = slug(text);
    // Repeated headings get -1, -2, … as on GitHub.
    auto n = seen[s]++;
    out.insert(n == 0 ? s : s + "-" + std::to_string(n));
  }
  return out;
}

std::vector<std::string> markdown_files() {
  std::vector<std::string> out = {source_dir() + "/README.md"};
  for (auto& entry : fs::directory_iterator(source_dir() + "/docs"))
    if (entry.path().extension() == ".md")
      out.push_back(entry.path().string());
  return out;
}

/// The link targets of a Markdown file outside code blocks and spans.
std::vector<std::string> links_of(const std::string& path) {
  std::vector<std::string> out;
  static const std::regex link{R"(\]\(([^)\s]+)\))"};
  bool in_code = false;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("```", 0) == 0) {
      in_code = !in_code;
      continue;
    }
    if (in_code)
      continue;
    // Drop `code spans`: a "](…)" inside one is not a link.
    std::string text;
    bool span = false;
    for (char c : line) {
      if (c == '`')
        span = !span;
      else if (!span)
        text.push_back(c);
    }
    for (std::sregex_iterator it{text.begin(), text.end(), link}, end; it != end; ++it)
      out.push_back((*it)[1]);
  }
  return out;
}

} // namespace

TEST(Docs, EveryRelativeLinkAndAnchorInTheReadmeAndDocsResolves) {
  size_t checked = 0;
  for (auto& file : markdown_files()) {
    auto dir = fs::path(file).parent_path();
    for (auto& target : links_of(file)) {
      if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0 ||
          target.rfind("mailto:", 0) == 0)
        continue;
      ++checked;
      auto hash = target.find('#');
      auto path_part = target.substr(0, hash);
      auto resolved = path_part.empty() ? fs::path(file) : (dir / path_part).lexically_normal();
      ASSERT_TRUE(fs::exists(resolved)) << file << " links to " << target;
      if (hash == std::string::npos || fs::is_directory(resolved))
        continue;
      auto anchor = target.substr(hash + 1);
      auto anchors = anchors_of(resolved.string());
      EXPECT_TRUE(anchors.count(anchor)) << file << " links to " << target
                                         << ", a heading that does not exist";
    }
  }
  EXPECT_GE(checked, 5u) << "the checker found the links";
}

TEST(Docs, EveryDocumentTheShippedYamlAndReadmeNameExists) {
  static const std::regex named{R"(((?:docs|config|scripts|tests|bench)/[A-Za-z0-9_./-]+\.(?:md|yaml|mjs|sh))|\bdocs/[A-Z_]+\.md)"};
  size_t checked = 0;
  for (auto file : {"/config/connector-manager.yaml", "/config/providers.yaml", "/README.md"}) {
    auto text = read_file(source_dir() + file);
    for (std::sregex_iterator it{text.begin(), text.end(), named}, end; it != end; ++it) {
      std::string path = (*it)[0];
      while (!path.empty() && (path.back() == '.' || path.back() == '/'))
        path.pop_back();
      ++checked;
      EXPECT_TRUE(fs::exists(source_dir() + "/" + path)) << file << " names " << path;
    }
  }
  EXPECT_GT(checked, 5u);
}

TEST(Docs, TheSlugsFollowGithubsRules) {
  EXPECT_EQ(slug("Tenant limits"), "tenant-limits");
  EXPECT_EQ(slug("Walkthrough: a user connects Stripe, a service fetches the key"),
            "walkthrough-a-user-connects-stripe-a-service-fetches-the-key");
  EXPECT_EQ(slug("`scripts/run` and (friends)"), "scriptsrun-and-friends");
}
