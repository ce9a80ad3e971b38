#pragma once
// Filename remapping in the format of tftp-hpa's `--map-file` (`-m FILE`), accepted unchanged so existing
// set-ups (Windows backslashes, Pi serial directories, per-client files) move over as they are.
//
// Each line: OPERATION REGEX [REPLACEMENT]; '#' starts a comment; a backslash escapes whitespace and '#'.
// Operation letters (tftp-hpa 5.2): r replace, g repeat until no match, i case-insensitive, e end if
// matched, s restart from the first rule if matched, a refuse the request if matched (its REPLACEMENT,
// if any, gives the error message: the name with the match replaced, as tftp-hpa), G/P GET/PUT only,
// 4/6 IPv4/IPv6 only, ~ act when the regex does not match. Regexes go to glibc's regcomp(REG_EXTENDED
// [| REG_ICASE]) as written, and names are matched with regexec, exactly as tftp-hpa's remap.c does
// (POSIX leftmost-longest, GNU escapes such as \w, \s, \b, \< and an escaped ordinary character).
// Refused, although glibc accepts them: back-references inside a regex (\1: regexec backtracks on them),
// repetition counts over 255 and regexes that expand to more than 256 positions; a request whose
// searches would cost more than a fixed budget is refused like tftp-hpa's endless loops (see tftp_remap.cpp).
// Replacement escapes: \0..\9, \i client IP, \x client IP in hex, \U \L \E case conversion, \\ and any
// other escaped character stand for themselves.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::netboot {

struct TftpRemapClient {
  std::string address;      // "192.0.2.169" or "2001:db8::1", for \i
  std::string address_hex;  // "C00002A9", for \x
  bool ipv6 = false;
  bool is_write = false;  // selects G/P rules

  static TftpRemapClient ipv4(const std::uint8_t (&octets)[4], bool is_write = false);
};

struct TftpRemapResult {
  bool denied = false;
  std::string filename;       // the rewritten name when not denied
  std::string denial_reason;  // for the ERROR packet and the log when denied
};

class TftpRemapRules {
 public:
  TftpRemapRules();
  ~TftpRemapRules();
  TftpRemapRules(TftpRemapRules&&) noexcept;
  TftpRemapRules& operator=(TftpRemapRules&&) noexcept;

  // Throws aggrik8s::Error naming `source_name`, the line and the problem (bad flag, bad regex...).
  static TftpRemapRules parse(std::string_view text, const std::string& source_name);
  static TftpRemapRules load(const std::filesystem::path& path);

  TftpRemapResult apply(std::string_view filename, const TftpRemapClient& client) const;
  std::size_t size() const;

 private:
  struct Rule;
  std::vector<Rule> rules_;
};

// The checks made on a remap regex before regcomp sees it: no back-reference (\1..\9 outside a bracket
// expression), no repetition count over 255, no repetition of something that can match the empty
// string ((a*)*, a**: glibc's regcomp takes exponential time on nests of them), at most 256 positions
// once glibc has expanded the bounded repetitions (a{3} is compiled as aaa). Returns that number of positions, which apply() charges per
// search. Throws std::invalid_argument saying which rule was broken. Exposed for tests.
std::size_t check_tftp_remap_regex(std::string_view posix_extended);

}  // namespace aggrik8s::netboot
