#include "netboot/tftp/tftp_remap.hpp"

#include <cctype>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"

namespace aggrik8s::netboot {

namespace {

// tftp-hpa 5.2 gives up after this many rule applications (a `rg a aa` rule would never end).
constexpr int max_rule_steps = 1024;
// Longest name a rewrite may produce. Without it, 1024 steps of a rule that lengthens the name
// (`rg a aaaa...`) grow it to megabytes, and each later regex search is slower than the last: one
// request could keep the server busy for minutes. A client's name arrives in one request packet
// (tftp-hpa reads 516 bytes), so twice that leaves room for any real rewrite while keeping the
// worst case (each search costs name length times the regex's size, 1024 times) to milliseconds.
constexpr std::size_t max_rewritten_length = 1024;
// POSIX's RE_DUP_MAX minimum. std::regex expands a bounded repetition into that many copies of its
// operand, and libstdc++ overflows an int while reading a count of many digits (UBSan, found by the
// tftp_remap fuzz target), so counts are checked before std::regex sees them.
constexpr unsigned long max_repetition_count = 255;

// Checks the interval expression starting at in[open] == '{' ("{m}", "{m,}", "{m,n}"): every count
// must be at most max_repetition_count. Anything else is left to std::regex to accept or refuse.
void check_interval(std::string_view in, std::size_t open) {
  std::size_t i = open + 1;
  while (i < in.size() && in[i] != '}') {
    if (in[i] < '0' || in[i] > '9') {
      if (in[i] != ',') return;
      ++i;
      continue;
    }
    std::size_t start = i;
    while (i < in.size() && in[i] >= '0' && in[i] <= '9') ++i;
    std::string_view digits = in.substr(start, i - start);
    while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
    if (digits.size() > 3 || std::stoul(std::string(digits)) > max_repetition_count) {
      throw std::invalid_argument("repetition count " + std::string(in.substr(start, i - start)) + " is larger than " +
                                  std::to_string(max_repetition_count));
    }
  }
}

enum RuleFlag : unsigned {
  rewrite = 1u << 0,
  global = 1u << 1,
  exit_on_match = 1u << 2,
  restart_on_match = 1u << 3,
  abort_on_match = 1u << 4,
  inverse = 1u << 5,
  ipv4_only = 1u << 6,
  ipv6_only = 1u << 7,
  get_only = 1u << 8,
  put_only = 1u << 9,
};

// tftp-hpa's readescstring(): skips leading blanks, stops at an unescaped blank or '#', keeps escapes.
std::string read_escaped_token(std::string_view line, std::size_t& position) {
  while (position < line.size() && std::isspace(static_cast<unsigned char>(line[position]))) ++position;
  std::string token;
  bool escaped = false;
  while (position < line.size()) {
    char c = line[position];
    if (!escaped && (std::isspace(static_cast<unsigned char>(c)) || c == '#')) break;
    escaped = !escaped && c == '\\';
    token += c;
    ++position;
  }
  return token;
}

bool is_ere_special(char c) {
  return std::string_view(".[]\\()*+?{}|^$").find(c) != std::string_view::npos;
}

}  // namespace

std::string translate_tftp_remap_regex(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (c == '[') {
      // Bracket expressions are copied verbatim: inside them a backslash is literal in POSIX and in
      // std::regex::extended alike. Only their end has to be found: ']' first is literal, and [:..:],
      // [=..=], [. .] may contain ']'.
      std::size_t j = i + 1;
      if (j < in.size() && in[j] == '^') ++j;
      if (j < in.size() && in[j] == ']') ++j;
      while (j < in.size() && in[j] != ']') {
        if (in[j] == '[' && j + 1 < in.size() && (in[j + 1] == ':' || in[j + 1] == '=' || in[j + 1] == '.')) {
          char kind = in[j + 1];
          std::size_t close = in.find(std::string{kind, ']'}, j + 2);
          if (close == std::string_view::npos) throw std::invalid_argument("unterminated [" + std::string(1, kind));
          j = close + 2;
        } else {
          ++j;
        }
      }
      if (j >= in.size()) throw std::invalid_argument("unterminated bracket expression");
      out.append(in.substr(i, j + 1 - i));
      i = j + 1;
      continue;
    }
    if (c != '\\') {
      if (c == '{') check_interval(in, i);
      out += c;
      ++i;
      continue;
    }
    if (i + 1 >= in.size()) throw std::invalid_argument("trailing backslash");
    char escaped = in[i + 1];
    i += 2;
    if (is_ere_special(escaped)) {
      out += '\\';
      out += escaped;
    } else if (escaped == 'w') {
      out += "[[:alnum:]_]";
    } else if (escaped == 'W') {
      out += "[^[:alnum:]_]";
    } else if (escaped == 's') {
      out += "[[:space:]]";
    } else if (escaped == 'S') {
      out += "[^[:space:]]";
    } else if (std::string_view("bB<>`'").find(escaped) != std::string_view::npos) {
      throw std::invalid_argument(std::string("\\") + escaped + " (a GNU word/buffer anchor) is not supported");
    } else if (escaped >= '1' && escaped <= '9') {
      throw std::invalid_argument(std::string("\\") + escaped + " (a back reference inside the regex) is not supported");
    } else {
      // glibc reads an escaped ordinary character as that character: "\ " and "\#" come from the map
      // file's own escaping. std::regex would reject the escape, so it is dropped.
      out += escaped;
    }
  }
  return out;
}

struct TftpRemapRules::Rule {
  unsigned flags = 0;
  std::regex regex;
  std::string replacement;
  std::size_t line = 0;
};

TftpRemapRules::TftpRemapRules() = default;
TftpRemapRules::~TftpRemapRules() = default;
TftpRemapRules::TftpRemapRules(TftpRemapRules&&) noexcept = default;
TftpRemapRules& TftpRemapRules::operator=(TftpRemapRules&&) noexcept = default;

std::size_t TftpRemapRules::size() const { return rules_.size(); }

TftpRemapClient TftpRemapClient::ipv4(const std::uint8_t (&octets)[4], bool is_write) {
  TftpRemapClient client;
  static constexpr char hex[] = "0123456789ABCDEF";
  for (int i = 0; i < 4; ++i) {
    if (i > 0) client.address += '.';
    client.address += std::to_string(octets[i]);
    client.address_hex += hex[octets[i] >> 4];
    client.address_hex += hex[octets[i] & 0xf];
  }
  client.is_write = is_write;
  return client;
}

TftpRemapRules TftpRemapRules::parse(std::string_view text, const std::string& source_name) {
  TftpRemapRules rules;
  std::size_t line_number = 0;
  std::size_t line_start = 0;
  while (line_start <= text.size()) {
    std::size_t line_end = text.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = text.size();
    std::string line;
    for (char c : text.substr(line_start, line_end - line_start)) {
      if (c != '\r' && c != '\0') line += c;  // as tftp-hpa's read_line()
    }
    ++line_number;
    line_start = line_end + 1;
    auto fail = [&](const std::string& what) -> Error {
      return Error(source_name + ":" + std::to_string(line_number) + ": " + what);
    };

    std::size_t position = 0;
    std::string operation = read_escaped_token(line, position);
    if (operation.empty()) continue;  // blank or comment-only line

    Rule rule;
    rule.line = line_number;
    // libstdc++'s default matcher backtracks, and POSIX leftmost-longest makes it try every way to
    // match: `(a|b)******` against a few hundred characters of a client's file name ran for minutes.
    // __polynomial selects its Thompson (breadth-first) matcher: name length times regex size; it
    // refuses back-references (\1 in the regex), which tftp-hpa's rules do not use.
    auto syntax = std::regex::extended | std::regex_constants::__polynomial;
    for (char flag : operation) {
      switch (flag) {
        case 'r': rule.flags |= rewrite; break;
        case 'g': rule.flags |= global; break;
        case 'i': syntax |= std::regex::icase; break;
        case 'e': rule.flags |= exit_on_match; break;
        case 's': rule.flags |= restart_on_match; break;
        case 'a': rule.flags |= abort_on_match; break;
        case '~': rule.flags |= inverse; break;
        case '4': rule.flags |= ipv4_only; break;
        case '6': rule.flags |= ipv6_only; break;
        case 'G': rule.flags |= get_only; break;
        case 'P': rule.flags |= put_only; break;
        default: throw fail("invalid operation flag \"" + std::string(1, flag) + "\" in \"" + operation + "\"");
      }
    }
    if ((rule.flags & rewrite) && (rule.flags & inverse)) throw fail("flags r and ~ cannot be combined");
    if (!(rule.flags & rewrite)) rule.flags &= ~static_cast<unsigned>(global);

    std::string pattern = read_escaped_token(line, position);
    if (pattern.empty()) throw fail("regex missing after \"" + operation + "\"");
    try {
      rule.regex = std::regex(translate_tftp_remap_regex(pattern), syntax);
    } catch (const std::exception& e) {
      throw fail("bad regex \"" + pattern + "\": " + e.what());
    }
    rule.replacement = read_escaped_token(line, position);
    rules.rules_.push_back(std::move(rule));
  }
  return rules;
}

TftpRemapRules TftpRemapRules::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read TFTP remap file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path.string());
}

namespace {

enum class CaseConversion { none, upper, lower };

void append_converted(std::string& out, std::string_view text, CaseConversion conversion) {
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (conversion == CaseConversion::upper) c = static_cast<char>(std::toupper(byte));
    if (conversion == CaseConversion::lower) c = static_cast<char>(std::tolower(byte));
    out += c;
  }
}

// The replacement pattern with its escapes resolved, as tftp-hpa's genmatchstring() does.
std::string expand_replacement(std::string_view pattern, const std::smatch& match, const TftpRemapClient& client) {
  std::string out;
  CaseConversion conversion = CaseConversion::none;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c != '\\' || i + 1 >= pattern.size()) {
      append_converted(out, std::string_view(&pattern[i], 1), conversion);
      continue;
    }
    char escape = pattern[++i];
    if (escape >= '0' && escape <= '9') {
      auto group = static_cast<std::size_t>(escape - '0');
      if (group < match.size() && match[group].matched) append_converted(out, match[group].str(), conversion);
    } else if (escape == 'i') {
      append_converted(out, client.address, conversion);
    } else if (escape == 'x') {
      append_converted(out, client.address_hex, conversion);
    } else if (escape == 'U') {
      conversion = CaseConversion::upper;
    } else if (escape == 'L') {
      conversion = CaseConversion::lower;
    } else if (escape == 'E') {
      conversion = CaseConversion::none;
    } else {
      append_converted(out, std::string_view(&pattern[i], 1), conversion);
    }
  }
  return out;
}

}  // namespace

TftpRemapResult TftpRemapRules::apply(std::string_view filename, const TftpRemapClient& client) const {
  TftpRemapResult result;
  std::string current(filename);
  unsigned not_applicable = client.is_write ? get_only : put_only;
  not_applicable |= client.ipv6 ? ipv4_only : ipv6_only;
  int steps_left = max_rule_steps;
  auto give_up = [&result]() {
    result.denied = true;
    result.denial_reason = "Remap table failure";
    return result;
  };

  std::size_t index = 0;
  while (index < rules_.size()) {
    const Rule& rule = rules_[index];
    std::size_t next = index + 1;
    if (rule.flags & not_applicable) {
      index = next;
      continue;
    }
    if (steps_left-- <= 0) return give_up();
    std::smatch match;
    bool found = std::regex_search(current, match, rule.regex);
    bool applies = (rule.flags & inverse) ? !found : found;
    if (!applies) {
      index = next;
      continue;
    }
    if (rule.flags & abort_on_match) {
      result.denied = true;
      result.denial_reason = rule.replacement.empty() ? "Access violation"
                                                      : expand_replacement(rule.replacement, match, client);
      return result;
    }
    if (rule.flags & rewrite) {
      while (true) {
        std::string rewritten = match.prefix().str() + expand_replacement(rule.replacement, match, client) +
                                match.suffix().str();
        if (rewritten.size() > max_rewritten_length) return give_up();
        current = std::move(rewritten);
        if (!(rule.flags & global) || !std::regex_search(current, match, rule.regex)) break;
        if (steps_left-- <= 0) return give_up();
      }
    }
    if (rule.flags & exit_on_match) break;
    if (rule.flags & restart_on_match) next = 0;
    index = next;
  }
  result.filename = std::move(current);
  return result;
}

}  // namespace aggrik8s::netboot
