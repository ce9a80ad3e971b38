#include "netboot/tftp/tftp_remap.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"

#include <chrono>
#include <string>
#include <utility>
#include <vector>

using namespace aggrik8s::netboot;

namespace {

TftpRemapClient client_192_0_2_169(bool is_write = false) {
  const std::uint8_t octets[4] = {192, 0, 2, 169};
  return TftpRemapClient::ipv4(octets, is_write);
}

std::string mapped(const TftpRemapRules& rules, std::string_view name, TftpRemapClient client = client_192_0_2_169()) {
  TftpRemapResult result = rules.apply(name, client);
  REQUIRE_FALSE(result.denied);
  return result.filename;
}

}  // namespace

TEST_CASE("tftp remap: remap client addresses for the i and x escapes", "[tftp][remap]") {
  auto client = client_192_0_2_169();
  CHECK(client.address == "192.0.2.169");
  CHECK(client.address_hex == "C00002A9");
}

TEST_CASE("tftp remap: tftp-hpa's Windows example: backslashes become slashes, then case folding", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse(R"(
# Windows clients ask for \Boot\BCD
rg  \\                  /       # Convert backslashes to slashes
r   ^/                          # strip the leading slash
ri  ^boot/(.*)          boot/\L\1
)",
                                     "windows.map");
  CHECK(rules.size() == 3);
  CHECK(mapped(rules, "\\Boot\\BCD") == "boot/bcd");
  CHECK(mapped(rules, "\\BOOT\\x64\\wdsmgfw.efi") == "boot/x64/wdsmgfw.efi");
  CHECK(mapped(rules, "pxelinux.0") == "pxelinux.0");
}

TEST_CASE("tftp remap: Raspberry Pi serial prefixes and per-client files", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse(
      "# Pi firmware asks for <serial>/file; serve every Pi from one tree\n"
      "re ^[0-9a-f]{8}/(.*)$  rpi/\\1\n"
      "r  ^pxelinux\\.cfg/default$  pxelinux.cfg/\\x   # per-client config, by IP in hex\n"
      "r  ^client-ip$  \\i\n",
      "pi.map");
  CHECK(mapped(rules, "9ffefdef/config.txt") == "rpi/config.txt");
  CHECK(mapped(rules, "9ffefdef/overlays/vc4-kms-v3d.dtbo") == "rpi/overlays/vc4-kms-v3d.dtbo");
  CHECK(mapped(rules, "pxelinux.cfg/default") == "pxelinux.cfg/C00002A9");
  CHECK(mapped(rules, "client-ip") == "192.0.2.169");
  CHECK(mapped(rules, "notaserial/config.txt") == "notaserial/config.txt");
}

TEST_CASE("tftp remap: e ends processing, s starts over, a refuses", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse(
      "re ^a$ b\n"
      "r  ^b$ c\n"
      "a  secret  Forbidden\\ file\\ \\0\n"
      "rs ^x y\n"
      "r  ^y$ z\n",
      "flags.map");
  CHECK(mapped(rules, "a") == "b");  // e: the second rule does not run
  CHECK(mapped(rules, "b") == "c");
  CHECK(mapped(rules, "x") == "z");  // y after restart, then the last rule
  TftpRemapResult denied = rules.apply("my-secret-key", client_192_0_2_169());
  CHECK(denied.denied);
  CHECK(denied.denial_reason == "my-Forbidden file secret-key");  // as tftp-hpa: the name, match replaced
}

TEST_CASE("tftp remap: G/P and 4/6 restrict rules, ~ inverts the match", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse(
      "rG ^get$ read\n"
      "rP ^get$ write\n"
      "r6 ^v$ six\n"
      "r4 ^v$ four\n"
      "a~ ^allowed/\n",
      "scope.map");
  CHECK(rules.apply("get", client_192_0_2_169(true)).denied);  // "write" is not under allowed/
  TftpRemapClient v6;
  v6.address = "2001:db8::1";
  v6.ipv6 = true;
  CHECK(rules.apply("allowed/v", v6).filename == "allowed/v");
  auto plain = TftpRemapRules::parse("rG ^get$ read\nrP ^get$ write\nr6 ^v$ six\nr4 ^v$ four\n", "scope.map");
  CHECK(mapped(plain, "get") == "read");
  CHECK(mapped(plain, "get", client_192_0_2_169(true)) == "write");
  CHECK(mapped(plain, "v") == "four");
  CHECK(plain.apply("v", v6).filename == "six");
}

TEST_CASE("tftp remap: regexes are POSIX extended: leftmost-longest, literal backslash in brackets", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse("r a|ab X\nrg [\\\\] /\n", "ere.map");
  CHECK(mapped(rules, "abc") == "Xc");  // ECMAScript would pick "a" and give "Xbc"
  CHECK(mapped(rules, "a\\b") == "X/b");
  CHECK(mapped(rules, "z\\y\\w") == "z/y/w");
}

TEST_CASE("tftp remap: escaped blanks and hashes, the U escape and unmatched groups", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse("r ^my\\ file\\#1$ \\Uup\\Eper\n"
                                     "r ^(x)?y$ [\\1]\n",
                                     "escape.map");
  CHECK(mapped(rules, "my file#1") == "UPper");
  CHECK(mapped(rules, "y") == "[]");
  CHECK(mapped(rules, "xy") == "[x]");
}

TEST_CASE("tftp remap: a rule that never stops matching gives up like tftp-hpa", "[tftp][remap]") {
  auto rules = TftpRemapRules::parse("rg a aa\n", "loop.map");
  TftpRemapResult result = rules.apply("a", client_192_0_2_169());
  CHECK(result.denied);
  CHECK(result.denial_reason == "Remap table failure");
}

TEST_CASE("tftp remap: a rewrite may not grow the name past 1024 bytes", "[tftp][remap]") {
  // Found by the tftp_remap fuzz target: `rg a <100 bytes with an a>` grew the name by 100 bytes for
  // each of the 1024 steps, and every step searched the longer name again (a 10 s request).
  std::string rule = "rg a " + std::string(100, 'x') + "a\n";
  auto rules = TftpRemapRules::parse(rule, "grow.map");
  TftpRemapResult result = rules.apply("a", client_192_0_2_169());
  CHECK(result.denied);
  CHECK(result.denial_reason == "Remap table failure");
  // Right up to the limit is still fine.
  auto fits = TftpRemapRules::parse("r ^a$ " + std::string(1024, 'b') + "\n", "fits.map");
  CHECK(mapped(fits, "a") == std::string(1024, 'b'));
  auto too_long = TftpRemapRules::parse("r ^a$ " + std::string(1025, 'b') + "\n", "long.map");
  CHECK(too_long.apply("a", client_192_0_2_169()).denied);
}

TEST_CASE("tftp remap: nested repetition runs in time linear in the name", "[tftp][remap]") {
  // Found by the tftp_remap fuzz target: with a backtracking matcher, `(a|b)*****c` against a long
  // name of a's tried every way to split it, for minutes per request. Repeating a repetition is now
  // refused (next test case); nests whose inner piece cannot be empty remain, and stay linear.
  auto rules = TftpRemapRules::parse("r ((a|b)+c?)+x x\nr ^(a|aa)*$ \\0-done\n", "nested.map");
  std::string name(400, 'a');
  CHECK(mapped(rules, name) == name + "-done");
}

TEST_CASE("tftp remap: repetition counts are bounded before regcomp sees them", "[tftp][remap]") {
  // Found by the tftp_remap fuzz target: a count of 72 digits overflowed an int inside libstdc++'s
  // regex compiler (UBSan), which read rules before glibc's regcomp did. Counts up to POSIX's
  // RE_DUP_MAX minimum (255) still work; glibc alone would take 32767.
  CHECK(mapped(TftpRemapRules::parse("r ^a{2,255}$ ok\n", "ok.map"), "aaa") == "ok");
  CHECK(mapped(TftpRemapRules::parse("r ^a{0003}$ ok\n", "zeros.map"), "aaa") == "ok");
  for (const std::string& pattern : std::vector<std::string>{"a{256}", "a{1,256}", "a{" + std::string(72, '8') + "}"}) {
    try {
      (void)TftpRemapRules::parse("r " + pattern + " x\n", "count.map");
      FAIL("accepted " << pattern);
    } catch (const aggrik8s::Error& e) {
      CHECK_THAT(std::string(e.what()), Catch::Contains("count.map:1") && Catch::Contains("larger than 255"));
    }
  }
}

TEST_CASE("tftp remap: remap file errors name the file and line", "[tftp][remap]") {
  CHECK_THROWS_WITH(TftpRemapRules::parse("# ok\nrx ^a b\n", "bad.map"),
                    "bad.map:2: invalid operation flag \"x\" in \"rx\"");
  CHECK_THROWS_WITH(TftpRemapRules::parse("r\n", "bad.map"), "bad.map:1: regex missing after \"r\"");
  CHECK_THROWS_WITH(TftpRemapRules::parse("r~ a b\n", "bad.map"), "bad.map:1: flags r and ~ cannot be combined");
  CHECK_THROWS_WITH(TftpRemapRules::parse("\n\nr (a b\n", "bad.map"), Catch::StartsWith("bad.map:3: bad regex \"(a\""));
  CHECK_THROWS_WITH(TftpRemapRules::parse("r ^(a)\\1 x\n", "bad.map"),
                    "bad.map:1: bad regex \"^(a)\\1\": \\1 (a back reference inside the regex) is not supported");
  // glibc's own message for what regcomp refuses.
  CHECK_THROWS_WITH(TftpRemapRules::parse("r [abc x\n", "bad.map"), Catch::Contains("Unmatched ["));
  CHECK_THROWS_WITH(TftpRemapRules::parse("r abc\\\n", "bad.map"), Catch::Contains("Trailing backslash"));
}

TEST_CASE("tftp remap: regexes reach glibc's regcomp as tftp-hpa passes them", "[tftp][remap]") {
  // GNU escapes, word anchors and glibc's {,n} (libstdc++'s std::regex refused the last two).
  auto rules = TftpRemapRules::parse("re my\\ file\\#1 escaped\n"
                                     "r ^\\w+\\s \n"
                                     "rg \\<old\\> new\n"
                                     "re ^x{,3}$ at-most-three\n"
                                     "re []a]+ B\n"
                                     "re [[:digit:]]+ N\n"
                                     "rie ^[a-f]+$ hex\n",
                                     "glibc.map");
  // Request name, then what tftp-hpa 5.2 (the same regcomp/regexec calls) maps it to.
  const std::vector<std::pair<std::string, std::string>> expected_names = {
      {"word_1 old bold old", "new bold new"}, {"xxx", "at-most-three"}, {"xxxx", "xxxx"},
      {"z]a]z", "zBz"},                        {"pxe42.cfg", "pxeN.cfg"},
      {"ABCDEF", "hex"},  // i: REG_ICASE applies to bracket ranges too
      {"my file#1", "escaped"},
  };
  for (const auto& [name, expected] : expected_names) CHECK(mapped(rules, name) == expected);
}

TEST_CASE("tftp remap: a back-reference or an expanded regex over 256 positions is refused", "[tftp][remap]") {
  CHECK(check_tftp_remap_regex("^[0-9a-f]{8}/(.*)$") < 20);
  CHECK(check_tftp_remap_regex("a{2,255}") == 255);
  CHECK(check_tftp_remap_regex("(ab){4}") == 12);  // (ab) is a group of two plus its parentheses
  CHECK(check_tftp_remap_regex("[\\1]x\\\\1") == 4);  // a backslash is literal in brackets; \\ then 1
  CHECK_THROWS_AS(check_tftp_remap_regex("(a)\\1"), std::invalid_argument);
  // glibc copies the operand of a bounded repetition per count, so nested counts multiply: these
  // took seconds and hundreds of MB in regcomp before they were refused.
  for (std::string pattern : {"a{255}{255}", "(a{255}){5}", "a{200}b{57}", "((a{20}|b){12})", "(((((((((a+)+)+)+)+)+)+)+)+)+"}) {
    CHECK_THROWS_WITH(check_tftp_remap_regex(pattern), Catch::Contains("more than 256 positions"));
  }
  CHECK_THROWS_WITH(TftpRemapRules::parse("\nr ((a{255}){255}){255} x\n", "big.map"),
                    Catch::StartsWith("big.map:2: bad regex") && Catch::Contains("256 positions"));
}

TEST_CASE("tftp remap: repeating what can match the empty string is refused before regcomp", "[tftp][remap]") {
  // Found by the tftp_remap fuzz target (regressions/tftp_remap/anchored_nullable_nest_compile_time):
  // glibc's regcomp computes epsilon closures through nests like (a*)* in time exponential in their
  // number after an anchor: ^[2-9a-f] and 41 stars then {4} kept regcomp busy for minutes, and a
  // remap file is read on serve's io thread at start and on every reload.
  for (std::string pattern : {"^[2-9a-f]*****************************************{4}/(.*)$", "a**", "(a*)*", "(a?)+",
                              "(a|)*", "(x|y*){3}", "()*", "(^)*", "a{0,3}*", "a{,2}{2}", "(\\b)*", "(a*b*)+"}) {
    CHECK_THROWS_WITH(check_tftp_remap_regex(pattern), Catch::Contains("repeats something that can match the empty string"));
  }
  // Repeating what needs at least one character is fine, nested or not.
  for (std::string pattern : {"^(a*b)*$", "((a|b)+c?)+", "(a{0,3}b)+", "([0-9a-f]{2}:){5}[0-9a-f]{2}", "(a|b*c)*",
                              "^([^/]*/)*([^/]+)$", "a{1,3}", "(\\.[a-z]+)?"}) {
    CHECK_NOTHROW(check_tftp_remap_regex(pattern));
  }
  CHECK_THROWS_WITH(TftpRemapRules::parse("r ^(a*)*(b*)*$ x\n", "nest.map"),
                    Catch::StartsWith("nest.map:1: bad regex") && Catch::Contains("offset 5"));
  // What is still accepted compiles quickly even in the shape that was slow: many nests after ^.
  std::string many = "^";
  for (int i = 0; i < 30; ++i) many += "(a*b)*";
  auto started = std::chrono::steady_clock::now();
  auto rules = TftpRemapRules::parse("r " + many + "$ ok\n", "many.map");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHECK(mapped(rules, "aabab") == "ok");
  CHECK(seconds < 2);  // milliseconds unsanitised
}

TEST_CASE("tftp remap: a request whose searches cost too much is given up", "[tftp][remap]") {
  // (a|aa){1,60}$ against a long name costs glibc tens of milliseconds per search (sub-matches over
  // 241 positions); 1024 steps of it would keep the server busy for a minute. The work budget ends it.
  auto rules = TftpRemapRules::parse("rg (a|aa){1,60}$ \\0\n", "costly.map");
  auto started = std::chrono::steady_clock::now();
  TftpRemapResult result = rules.apply(std::string(1000, 'a'), client_192_0_2_169());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHECK(result.denied);
  CHECK(result.denial_reason == "Remap table failure");
  CHECK(seconds < 5);  // about 0.1 s unsanitised; generous for a busy machine and sanitizers
}
