// core/log_escape: what a client can put in a log line after escaping.
#include "core/log_escape.hpp"

#include <catch2/catch.hpp>

using aggrik8s::log_escape;
using namespace std::string_literals;

TEST_CASE("log escape: printable ASCII and UTF-8 text pass through", "[log_escape]") {
  CHECK(log_escape("/talos/52-54-00-12-34-56/config.yaml?x=1&y=%20") == "/talos/52-54-00-12-34-56/config.yaml?x=1&y=%20");
  CHECK(log_escape("") == "");
  CHECK(log_escape("grüße 日本 🙂") == "grüße 日本 🙂");
}

TEST_CASE("log escape: line breaks, terminal escapes, quotes and backslashes are escaped", "[log_escape]") {
  CHECK(log_escape("a\nb") == "a\\nb");
  CHECK(log_escape("a\r\nserve: stopped") == "a\\r\\nserve: stopped");
  CHECK(log_escape("tab\there") == "tab\\there");
  CHECK(log_escape("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07");
  CHECK(log_escape("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(log_escape("C:\\boot\\x1b") == "C:\\\\boot\\\\x1b");  // a literal backslash cannot fake an escape
  CHECK(log_escape("del\x7f") == "del\\x7f");
  CHECK(log_escape("nul\0here"s) == "nul\\x00here");
  // C1 CSI, bidi override and line separator are valid UTF-8 but act on the display.
  CHECK(log_escape("\xc2\x9b" "31m") == "\\u{009b}31m");
  CHECK(log_escape("file\xe2\x80\xae" "txt.exe") == "file\\u{202e}txt.exe");
  CHECK(log_escape("a\xe2\x80\xa8" "b") == "a\\u{2028}b");
}

TEST_CASE("log escape: bytes that are not well-formed UTF-8 are written as backslash-x and two hex digits", "[log_escape]") {
  CHECK(log_escape("\xff\xfe") == "\\xff\\xfe");
  CHECK(log_escape("caf\xe9") == "caf\\xe9");                  // Latin-1, not UTF-8
  CHECK(log_escape("\xc0\xaf") == "\\xc0\\xaf");               // overlong '/'
  CHECK(log_escape("\xed\xa0\x80") == "\\xed\\xa0\\x80");      // a surrogate
  CHECK(log_escape("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  CHECK(log_escape("\xe6\x97") == "\\xe6\\x97");               // truncated at the end
  CHECK(log_escape("\xe6\x97x") == "\\xe6\\x97x");             // resynchronises on the next byte
}

TEST_CASE("log escape: long text is cut at a boundary and says how long it was", "[log_escape]") {
  std::string long_path(5000, 'a');
  std::string escaped = log_escape(long_path);
  CHECK(escaped == std::string(256, 'a') + "...[truncated, 5000 bytes]");
  CHECK(log_escape("abcdef", 6) == "abcdef");
  CHECK(log_escape("abcdefg", 6) == "abcdef...[truncated, 7 bytes]");
  // An escape or a character that would cross the limit is left out whole.
  CHECK(log_escape("abcde\n", 6) == "abcde...[truncated, 6 bytes]");
  CHECK(log_escape("abcd\xe6\x97\xa5", 6) == "abcd...[truncated, 7 bytes]");
  // Escaping cannot make a line longer than the limit plus the marker.
  std::string controls(1000, '\x01');
  CHECK(log_escape(controls, 100).size() <= 100 + std::string("...[truncated, 1000 bytes]").size());
}
