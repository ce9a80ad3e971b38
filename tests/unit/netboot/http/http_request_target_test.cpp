// Request-target normalisation and Range parsing: the pure half of the HTTP server.
#include <catch2/catch.hpp>

#include "netboot/http/http_request_target.hpp"

using namespace aggrik8s::netboot;

TEST_CASE("http target: paths are decoded and normalised", "[http]") {
  auto plain = parse_http_request_target("/assets/talos/vmlinuz-amd64");
  REQUIRE(plain.ok());
  CHECK(plain.path == "/assets/talos/vmlinuz-amd64");
  CHECK(plain.segments() == std::vector<std::string>{"assets", "talos", "vmlinuz-amd64"});
  CHECK(parse_http_request_target("//files/./a//b").path == "/files/a/b");
  CHECK(parse_http_request_target("/files/dir/").path == "/files/dir/");
  CHECK(parse_http_request_target("/").path == "/");
  CHECK(parse_http_request_target("/files/a%20b").path == "/files/a b");
  auto query = parse_http_request_target("/ipxe?mac=52-54-00-12-34-56&uuid=&platform=efi&flag");
  REQUIRE(query.ok());
  CHECK(query.path == "/ipxe");
  CHECK(query.query_value("mac") == "52-54-00-12-34-56");
  CHECK(query.query_value("uuid") == "");
  CHECK(query.query_value("flag") == "");
  CHECK_FALSE(query.query_value("missing"));
}

TEST_CASE("http target: traversal in every spelling is refused", "[http]") {
  for (const char* target : {"/files/../etc/passwd", "/files/%2e%2e/etc/passwd", "/files/%2E%2e/x", "/files/.%2e/x",
                             "/..", "/files/a%2f..%2fb", "/files/a%2Fb", "/files/a%5c..%5cb", "/files/%00",
                             "/files/%zz", "/files/%2", "files/x", "http://evil/../x", "HTTP://h/%2e%2e/x", "http://h?q", "", "/a b", "/a\x01",
                             "/x#frag", "/ipxe?mac=%g0"}) {
    INFO(target);
    CHECK_FALSE(parse_http_request_target(target).ok());
  }
  CHECK_FALSE(parse_http_request_target("/" + std::string(http_max_target_length, 'a')).ok());
}

TEST_CASE("http target: the absolute-form is accepted, its authority ignored (RFC 9112 3.2.2)", "[http]") {
  auto target = parse_http_request_target("http://10.0.0.1:8080/files/a%20b?mac=52-54-00-12-34-56");
  REQUIRE(target.ok());
  CHECK(target.path == "/files/a b");
  CHECK(target.query_value("mac") == "52-54-00-12-34-56");
  CHECK(parse_http_request_target("HTTPS://boot.lan/ipxe").path == "/ipxe");
  CHECK(parse_http_request_target("http://boot.lan").path == "/");
  CHECK(http_origin_form("/x?y") == "/x?y");
  CHECK(http_origin_form("ftp://h/x") == "ftp://h/x");
}

TEST_CASE("http dates and If-Range (RFC 9110 5.6.7, 13.1.5)", "[http]") {
  CHECK(format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(format_http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example
  CHECK(format_http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
  CHECK(format_http_date(1796529906) == "Sun, 06 Dec 2026 04:05:06 GMT");
  CHECK(format_http_date(253402300799) == "Fri, 31 Dec 9999 23:59:59 GMT");
  const std::string etag = "\"1a-64-5f.0\"", date = "Sun, 06 Dec 2026 04:05:06 GMT";
  CHECK(http_if_range_allows_range(etag, etag, date));
  CHECK(http_if_range_allows_range(" " + etag + " ", etag, date));
  CHECK(http_if_range_allows_range(date, etag, date));
  CHECK_FALSE(http_if_range_allows_range("\"nope\"", etag, date));
  CHECK_FALSE(http_if_range_allows_range("W/" + etag, etag, date));  // weak tags never match
  CHECK_FALSE(http_if_range_allows_range("Mon, 01 Jan 1990 00:00:00 GMT", etag, date));
  CHECK_FALSE(http_if_range_allows_range(etag, "", ""));  // no validators: nothing matches
  CHECK_FALSE(http_if_range_allows_range("", etag, date));
}

TEST_CASE("http dates read back, and conditional requests (RFC 9110 13.1, 13.2.2)", "[http]") {
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{784111777}, std::int64_t{951782400}, std::int64_t{1796529906},
                         std::int64_t{253402300799}}) {
    CHECK(parse_http_date(format_http_date(t)) == t);
  }
  for (const char* bad : {"", "garbage", "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT",
                          "Sun Nov  6 08:49:37 1994", "Sun, 06 Xyz 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT"}) {
    INFO(bad);
    CHECK_FALSE(parse_http_date(bad));
  }
  const std::string etag = "\"1a-64-5f.0\"";
  const std::int64_t modified = 1796529906;
  const std::string at = format_http_date(modified), before = format_http_date(modified - 1);
  using R = HttpPreconditionResult;
  // If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since
  auto check = [&](std::string m, std::string nm, std::string ims, std::string ius) {
    return evaluate_http_preconditions(HttpConditions{m, nm, ims, ius}, etag, modified);
  };
  CHECK(check("", "", "", "") == R::proceed);
  // If-Match: strong comparison; a stale or weak tag fails (412), so a resume never splices versions.
  CHECK(check(etag, "", "", "") == R::proceed);
  CHECK(check("\"old\", " + etag, "", "", "") == R::proceed);
  CHECK(check("*", "", "", "") == R::proceed);
  CHECK(check("\"old\"", "", "", "") == R::failed);
  CHECK(check("W/" + etag, "", "", "") == R::failed);
  CHECK(check("", "", "", before) == R::failed);
  CHECK(check("", "", "", at) == R::proceed);
  CHECK(check(etag, "", "", before) == R::proceed);  // If-Match wins
  CHECK(check("", "", "", "not a date") == R::proceed);              // ignored
  // If-None-Match: weak comparison, 304; If-Modified-Since only without it.
  CHECK(check("", etag, "", "") == R::not_modified);
  CHECK(check("", "W/" + etag, "", "") == R::not_modified);
  CHECK(check("", "*", "", "") == R::not_modified);
  CHECK(check("", "\"other\"", "", "") == R::proceed);
  CHECK(check("", "", at, "") == R::not_modified);
  CHECK(check("", "", before, "") == R::proceed);
  CHECK(check("", "\"other\"", at, "") == R::proceed);  // If-None-Match wins
  CHECK(check("\"old\"", etag, "", "") == R::failed);            // 412 before 304
}

TEST_CASE("http target: percent encoding for URLs written into scripts", "[http]") {
  CHECK(percent_encode_path("talos-cp/vmlinuz amd64") == "talos-cp/vmlinuz%20amd64");
  CHECK(percent_encode_path("a&b?c") == "a%26b%3Fc");
  CHECK(percent_decode(percent_encode_path("x y/\xff")) == "x y/\xff");
}

TEST_CASE("http range: single ranges, suffixes, open ends, and what is ignored", "[http]") {
  auto range = parse_http_range("bytes=0-99", 1000);
  CHECK(range.kind == HttpRangeKind::partial);
  CHECK(range.range.first == 0);
  CHECK(range.range.last == 99);
  CHECK(range.range.length() == 100);
  range = parse_http_range("bytes=900-", 1000);
  CHECK((range.kind == HttpRangeKind::partial && range.range.first == 900 && range.range.last == 999));
  range = parse_http_range("bytes=-10", 1000);
  CHECK((range.kind == HttpRangeKind::partial && range.range.first == 990 && range.range.last == 999));
  range = parse_http_range("bytes=-5000", 1000);
  CHECK((range.kind == HttpRangeKind::partial && range.range.first == 0 && range.range.last == 999));
  range = parse_http_range("bytes=500-5000", 1000);
  CHECK((range.kind == HttpRangeKind::partial && range.range.last == 999));
  CHECK(parse_http_range("bytes=1000-", 1000).kind == HttpRangeKind::unsatisfiable);
  CHECK(parse_http_range("bytes=-0", 1000).kind == HttpRangeKind::unsatisfiable);
  CHECK(parse_http_range("bytes=0-0", 0).kind == HttpRangeKind::unsatisfiable);
  CHECK(parse_http_range("", 1000).kind == HttpRangeKind::whole);
  CHECK(parse_http_range("bytes=0-1,5-6", 1000).kind == HttpRangeKind::whole);
  CHECK(parse_http_range("bytes=5-1", 1000).kind == HttpRangeKind::whole);
  CHECK(parse_http_range("items=0-1", 1000).kind == HttpRangeKind::whole);
  CHECK(parse_http_range("bytes=x-1", 1000).kind == HttpRangeKind::whole);
  CHECK(parse_http_range("bytes=99999999999999999999-", 1000).kind == HttpRangeKind::whole);
}
