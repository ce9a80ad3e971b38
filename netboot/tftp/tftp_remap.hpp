#pragma once
// Filename remapping in the format of tftp-hpa's `--map-file` (`-m FILE`), accepted unchanged so existing
// set-ups (Windows backslashes, Pi serial directories, per-client files) move over as they are.
//
// Each line: OPERATION REGEX [REPLACEMENT]; '#' starts a comment; a backslash escapes whitespace and '#'.
// Operation letters (tftp-hpa 5.2): r replace, g repeat until no match, i case-insensitive, e end if
// matched, s restart from the first rule if matched, a refuse the request if matched, G/P GET/PUT only,
// 4/6 IPv4/IPv6 only, ~ act when the regex does not match. Regexes are POSIX extended, as tftp-hpa's
// regcomp(REG_EXTENDED) reads them (leftmost-longest), matched in polynomial time (no backtracking);
// back-references inside a regex (glibc's \1) are refused. Replacement escapes: \0..\9, \i client IP, \x client
// IP in hex, \U \L \E case conversion, \\ and any other escaped character stand for themselves.
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

// tftp-hpa's regexes are POSIX EREs with glibc's extensions; std::regex::extended rejects escapes of
// ordinary characters, so they are translated first. Exposed for tests. Throws std::invalid_argument
// for constructs std::regex cannot express (\b, \<, \>, a trailing backslash).
std::string translate_tftp_remap_regex(std::string_view posix_extended);

}  // namespace aggrik8s::netboot
