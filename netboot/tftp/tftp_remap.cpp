#include "netboot/tftp/tftp_remap.hpp"

#include <regex.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s::netboot {

namespace {

// tftp-hpa 5.2 gives up after this many rule applications (a `rg a aa` rule would never end).
constexpr int max_rule_steps = 1024;
// Longest name a rewrite may produce. Without it, 1024 steps of a rule that lengthens the name
// (`rg a aaaa...`) grow it to megabytes, and each later regex search is slower than the last: one
// request could keep the server busy for minutes. A client's name arrives in one request packet
// (tftp-hpa reads 516 bytes), so twice that leaves room for any real rewrite while keeping the
// cost of each search (see max_match_work) small.
constexpr std::size_t max_rewritten_length = 1024;
// glibc accepts counts up to its RE_DUP_MAX (32767), but tftp-hpa on other C libraries stops at
// POSIX's minimum RE_DUP_MAX, 255, and no file name needs more: a map file that works here works
// there. The real cost bound is max_regex_positions below.
constexpr unsigned long max_repetition_count = 255;
// glibc's regcomp copies the operand of a bounded repetition once per count (a{3} becomes aaa, a+
// becomes aa*), so nested counts multiply: ((a{255}){255}){255} would be 16 million copies, gigabytes
// and minutes in regcomp. Measured with glibc 2.36: 65 025 positions take 110 ms and 16 MB to compile,
// and a search of a 1 KiB name with sub-matches costs 40 ms at 255 positions, 170 ms at 1020. 256
// allows the longest single count and is far above any real rule (a Pi serial rule has about 20).
constexpr std::size_t max_regex_positions = 256;
// regexec is not linear: a search that fails restarts at every position of the name (about 3 ns per
// length squared), and recovering sub-matches costs 40-150 ns per length times positions. Each search
// is charged (length + 1) * (16 * positions + length + 1); a request whose searches add up to more
// than this is given up as tftp-hpa gives up an endless loop. Twenty rules of 30 positions against a
// 512-byte name cost 10 M; the costliest search the bounds allow, 256 positions over 1 KiB, costs
// 5 M. Measured worst cases (`rg (a|aa){1,60}$ \0`, `rg a{1,255}$ \0` on 128 to 1000 a's) give up
// within 0.1 s of one core (glibc 2.36, unsanitised, load 7).
constexpr std::size_t max_match_work = std::size_t{16} << 20;

// A compiled regex_t, freed once. Move-only: regex_t holds pointers to glibc's compiled automaton.
// regexec may run on one regex_t from several threads at once (glibc locks its DFA cache), so
// transfer threads share one TftpRemapRules.
class PosixRegex {
 public:
  // Throws std::invalid_argument with regerror()'s text.
  PosixRegex(const std::string& pattern, int cflags) {
    int status = regcomp(&regex_, pattern.c_str(), cflags);
    if (status != 0) {
      std::array<char, 256> message{};
      regerror(status, &regex_, message.data(), message.size());
      throw std::invalid_argument(message.data());
    }
    compiled_ = true;
  }
  PosixRegex(PosixRegex&& other) noexcept : regex_(other.regex_), compiled_(other.compiled_) { other.compiled_ = false; }
  PosixRegex& operator=(PosixRegex&& other) noexcept {
    if (this != &other) {
      release();
      regex_ = other.regex_;
      compiled_ = std::exchange(other.compiled_, false);
    }
    return *this;
  }
  PosixRegex(const PosixRegex&) = delete;
  PosixRegex& operator=(const PosixRegex&) = delete;
  ~PosixRegex() { release(); }

  // Searches all of `text` (embedded NULs included, via REG_STARTEND) and fills the first `groups`
  // entries of `match` and sets the others to -1 (not taking part). Fewer groups is cheaper: glibc
  // recovers sub-matches (groups > 1) in a second pass over the name.
  bool search(std::string_view text, std::array<regmatch_t, 10>& match, std::size_t groups) const {
    match[0].rm_so = 0;
    match[0].rm_eo = static_cast<regoff_t>(text.size());
    bool found = regexec(&regex_, text.data(), groups, match.data(), REG_STARTEND) == 0;
    std::fill(match.begin() + static_cast<std::ptrdiff_t>(groups), match.end(), regmatch_t{-1, -1});
    return found;
  }

 private:
  void release() {
    if (compiled_) regfree(&regex_);
    compiled_ = false;
  }
  regex_t regex_{};
  bool compiled_ = false;
};

// Reads the interval expression starting at in[open] == '{' ("{m}", "{m,}", "{m,n}", glibc's "{,n}")
// and returns how many copies of its operand glibc compiles, with `close` set to its '}'. nullopt for
// anything else: regcomp then accepts or refuses it itself.
std::optional<std::size_t> interval_copies(std::string_view in, std::size_t open, std::size_t& close) {
  std::size_t i = open + 1;
  auto read_count = [&]() -> std::optional<unsigned long> {
    std::size_t start = i;
    while (i < in.size() && in[i] >= '0' && in[i] <= '9') ++i;
    if (i == start) return std::nullopt;
    std::string_view digits = in.substr(start, i - start);
    while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
    if (digits.size() > 3 || std::stoul(std::string(digits)) > max_repetition_count) {
      throw std::invalid_argument("repetition count " + std::string(in.substr(start, i - start)) + " is larger than " +
                                  std::to_string(max_repetition_count));
    }
    return std::stoul(std::string(digits));
  };
  std::optional<unsigned long> low = read_count();
  std::optional<unsigned long> high = low;
  bool open_ended = false;
  if (i < in.size() && in[i] == ',') {
    ++i;
    high = read_count();
    open_ended = !high;
  }
  if (i >= in.size() || in[i] != '}' || (!low && !high)) return std::nullopt;
  close = i;
  if (open_ended) return *low + 1;  // m copies, then one under a star
  return std::max(low.value_or(0), *high);
}

// Index of the ']' closing the bracket expression opened at in[open], or in.size() if none: a ']'
// first is literal, and [:..:], [=..=], [. .] may contain ']'. A backslash is literal inside.
std::size_t bracket_expression_end(std::string_view in, std::size_t open) {
  std::size_t j = open + 1;
  if (j < in.size() && in[j] == '^') ++j;
  if (j < in.size() && in[j] == ']') ++j;
  while (j < in.size() && in[j] != ']') {
    if (in[j] == '[' && j + 1 < in.size() && (in[j + 1] == ':' || in[j + 1] == '=' || in[j + 1] == '.')) {
      std::size_t close = in.find(std::string{in[j + 1], ']'}, j + 2);
      if (close == std::string_view::npos) return in.size();
      j = close + 2;
    } else {
      ++j;
    }
  }
  return std::min(j, in.size());
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

}  // namespace

std::size_t check_tftp_remap_regex(std::string_view in) {
  // One entry per open group: positions so far, and the positions of the last piece (what a
  // following repetition operator copies). Also whether the pieces can match the empty string:
  // repeating such a piece is refused (see the throw below).
  struct Group {
    std::size_t positions = 0;
    std::size_t last_piece = 0;
    bool has_piece = false;            // a piece a repetition operator would apply to
    bool last_nullable = false;        // the last piece can match the empty string
    bool before_last_nullable = true;  // every piece of this alternative before the last can
    bool an_alternative_nullable = false;
    bool alternative_nullable() const { return before_last_nullable && (!has_piece || last_nullable); }
  };
  std::vector<Group> groups(1);
  auto add_piece = [&](std::size_t positions, bool nullable) {
    Group& group = groups.back();
    group.before_last_nullable = group.alternative_nullable();
    group.positions += positions;
    group.last_piece = positions;
    group.has_piece = true;
    group.last_nullable = nullable;
  };
  // A repetition operator at in[at] whose result can match the empty string when `zero_allowed`.
  auto repeat_last_piece = [&](std::size_t copies, bool zero_allowed, std::size_t at) {
    Group& group = groups.back();
    if (group.has_piece && group.last_nullable) {
      // (a*)*, a**, (a?){3}, (x|)+: glibc's regcomp computes epsilon closures through such nests in
      // time exponential in their number after an anchor (^(a*)*(a*)*... with 15 pieces: 70 ms, 20:
      // seconds; ^[0-9a-f]*****...{4}, found by the tftp_remap fuzz target: minutes). POSIX leaves
      // adjacent repetition operators undefined, and the nest matches what its inner piece matches.
      throw std::invalid_argument("the repetition at offset " + std::to_string(at) +
                                  " repeats something that can match the empty string (as (a*)* or a**)");
    }
    if (group.last_piece != 0 && copies > max_regex_positions / group.last_piece) group.positions = max_regex_positions + 1;
    else group.positions = group.positions - group.last_piece + group.last_piece * copies;
    group.last_piece *= std::min(copies, max_regex_positions + 1);
    group.last_nullable = group.last_nullable || zero_allowed;
  };
  std::size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (c == '[') {
      i = bracket_expression_end(in, i) + 1;  // unterminated: regcomp says so
      add_piece(1, false);
    } else if (c == '\\') {
      if (i + 1 < in.size() && in[i + 1] >= '1' && in[i + 1] <= '9') {
        // glibc accepts back-references in an ERE, but matching them backtracks: exponential in the
        // name's length, and tftp-hpa's rules have no use for them.
        throw std::invalid_argument(std::string("\\") + in[i + 1] + " (a back reference inside the regex) is not supported");
      }
      // \b, \<, \>, \` and \' (GNU) match no character; the rest are one character.
      bool zero_width = i + 1 < in.size() && std::string_view("b<>`'B").find(in[i + 1]) != std::string_view::npos;
      i += 2;  // a trailing backslash: regcomp says so
      add_piece(1, zero_width);
    } else if (c == '(') {
      groups.emplace_back();
      ++i;
    } else if (c == ')' && groups.size() > 1) {
      std::size_t positions = groups.back().positions + 1;
      bool nullable = groups.back().an_alternative_nullable || groups.back().alternative_nullable();
      groups.pop_back();
      add_piece(positions, nullable);
      ++i;
    } else if (c == '|') {
      Group& group = groups.back();
      group.an_alternative_nullable = group.an_alternative_nullable || group.alternative_nullable();
      group.last_piece = 0;
      group.has_piece = false;
      group.last_nullable = false;
      group.before_last_nullable = true;
      ++i;
    } else if (c == '+') {
      repeat_last_piece(2, false, i);  // a+ is compiled as aa*
      ++i;
    } else if (c == '*' || c == '?') {
      repeat_last_piece(1, true, i);  // one copy
      ++i;
    } else if (c == '{') {
      std::size_t close = i;
      std::optional<std::size_t> copies = interval_copies(in, i, close);
      if (copies) {
        // {0,n} and {,n} (GNU) allow no copy at all.
        std::size_t first = i + 1;
        while (first < close && in[first] == '0') ++first;
        repeat_last_piece(*copies, first >= close || in[first] < '1' || in[first] > '9', i);
        i = close + 1;
      } else {
        add_piece(1, false);
        ++i;
      }
    } else {
      // The anchors ^ and $ match no character and cost nothing (a repetition right after one is
      // regcomp's REG_BADRPT, so they need not be pieces a repetition applies to).
      if (c != '^' && c != '$') add_piece(1, false);
      ++i;
    }
    if (groups.back().positions > max_regex_positions) {
      throw std::invalid_argument("the regex expands to more than " + std::to_string(max_regex_positions) +
                                  " positions (bounded repetitions are compiled as copies)");
    }
  }
  // Unclosed groups: regcomp refuses them, but count them so the bound holds either way.
  std::size_t positions = 0;
  for (const Group& group : groups) positions += group.positions;
  return std::max<std::size_t>(positions, 1);
}

namespace {

// How many regmatch_t entries a rule's searches must fill. tftp-hpa always asks for 10 (0 for ~
// rules); asking only for what the replacement uses gives the same result, and glibc skips its
// sub-match pass when at most the whole match is wanted.
std::size_t groups_used(unsigned flags, std::string_view replacement) {
  if ((flags & inverse) || !(flags & (rewrite | abort_on_match))) return 0;
  std::size_t groups = 1;  // what is around the match is kept, also in an a rule's message
  for (std::size_t i = 0; i + 1 < replacement.size(); ++i) {
    if (replacement[i] != '\\') continue;
    char escape = replacement[++i];
    if (escape >= '0' && escape <= '9') groups = std::max<std::size_t>(groups, static_cast<std::size_t>(escape - '0') + 1);
  }
  return groups;
}

}  // namespace

struct TftpRemapRules::Rule {
  unsigned flags = 0;
  PosixRegex regex;
  std::size_t positions = 1;  // from check_tftp_remap_regex, charged per search
  std::size_t groups = 0;     // regmatch_t entries a search fills: 0 when only "matched?" counts
  std::string replacement;
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

    unsigned flags = 0;
    int cflags = REG_EXTENDED;  // tftp-hpa's parseline(): REG_EXTENDED, | REG_ICASE for i
    for (char flag : operation) {
      switch (flag) {
        case 'r': flags |= rewrite; break;
        case 'g': flags |= global; break;
        case 'i': cflags |= REG_ICASE; break;
        case 'e': flags |= exit_on_match; break;
        case 's': flags |= restart_on_match; break;
        case 'a': flags |= abort_on_match; break;
        case '~': flags |= inverse; break;
        case '4': flags |= ipv4_only; break;
        case '6': flags |= ipv6_only; break;
        case 'G': flags |= get_only; break;
        case 'P': flags |= put_only; break;
        default: throw fail("invalid operation flag \"" + std::string(1, flag) + "\" in \"" + operation + "\"");
      }
    }
    if ((flags & rewrite) && (flags & inverse)) throw fail("flags r and ~ cannot be combined");
    if (!(flags & rewrite)) flags &= ~static_cast<unsigned>(global);

    std::string pattern = read_escaped_token(line, position);
    if (pattern.empty()) throw fail("regex missing after \"" + operation + "\"");
    std::string replacement = read_escaped_token(line, position);
    try {
      std::size_t positions = check_tftp_remap_regex(pattern);
      rules.rules_.push_back(Rule{flags, PosixRegex(pattern, cflags), positions,
                                  groups_used(flags, replacement), std::move(replacement)});
    } catch (const std::invalid_argument& e) {
      throw fail("bad regex \"" + pattern + "\": " + e.what());
    }
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

using RegexMatch = std::array<regmatch_t, 10>;

// The replacement pattern with its escapes resolved, as tftp-hpa's genmatchstring() does; `match`
// holds offsets into `subject`, -1 for a group that did not take part.
std::string expand_replacement(std::string_view pattern, std::string_view subject, const RegexMatch& match,
                               const TftpRemapClient& client) {
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
      const regmatch_t& group = match[static_cast<std::size_t>(escape - '0')];
      if (group.rm_so >= 0) {
        append_converted(out, subject.substr(static_cast<std::size_t>(group.rm_so),
                                             static_cast<std::size_t>(group.rm_eo - group.rm_so)), conversion);
      }
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

// `subject` with its match (match[0]) replaced by the expanded pattern, as genmatchstring() builds it.
std::string replace_match(std::string_view pattern, std::string_view subject, const RegexMatch& match,
                          const TftpRemapClient& client) {
  auto match_start = static_cast<std::size_t>(match[0].rm_so);
  auto match_end = static_cast<std::size_t>(match[0].rm_eo);
  std::string out(subject.substr(0, match_start));
  out += expand_replacement(pattern, subject, match, client);
  out += subject.substr(match_end);
  return out;
}

}  // namespace

TftpRemapResult TftpRemapRules::apply(std::string_view filename, const TftpRemapClient& client) const {
  TftpRemapResult result;
  std::string current(filename);
  unsigned not_applicable = client.is_write ? get_only : put_only;
  not_applicable |= client.ipv6 ? ipv4_only : ipv6_only;
  int steps_left = max_rule_steps;
  std::size_t work_left = max_match_work;
  RegexMatch match;
  // One regexec, charged against the work budget (see max_match_work); nullopt when it is spent.
  auto search = [&](const Rule& rule) -> std::optional<bool> {
    std::size_t length = current.size() + 1;
    std::size_t cost = length * (16 * rule.positions + length);
    if (cost > work_left) return std::nullopt;
    work_left -= cost;
    return rule.regex.search(current, match, rule.groups);
  };
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
    std::optional<bool> found = search(rule);
    if (!found) return give_up();
    bool applies = (rule.flags & inverse) ? !*found : *found;
    if (!applies) {
      index = next;
      continue;
    }
    if (rule.flags & abort_on_match) {
      // tftp-hpa's message is the name with the match replaced, like a rewrite ("a secret Forbidden"
      // refuses "top/secret.txt" with "top/Forbidden.txt"). A ~ rule has no match: tftp-hpa 5.2
      // would copy from offset -1 there, so only the expanded message is used.
      result.denied = true;
      if (rule.replacement.empty()) result.denial_reason = "Access denied";  // in.tftpd's words
      else if (rule.flags & inverse) result.denial_reason = expand_replacement(rule.replacement, current, match, client);
      else result.denial_reason = replace_match(rule.replacement, current, match, client);
      return result;
    }
    if (rule.flags & rewrite) {
      while (true) {
        std::string rewritten = replace_match(rule.replacement, current, match, client);
        if (rewritten.size() > max_rewritten_length) return give_up();
        current = std::move(rewritten);
        if (!(rule.flags & global)) break;
        if (steps_left-- <= 0) return give_up();
        found = search(rule);
        if (!found) return give_up();
        if (!*found) break;
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
