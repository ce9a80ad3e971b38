#pragma once
// What an HTTP request asks for, decided from bytes alone (no sockets, no files), so it can be unit
// tested and fuzzed: the request-target turned into a normalised path and query, and a Range header
// turned into one byte range of a file of known size.
//
// The path rules are deliberately stricter than RFC 3986 dot-segment removal: the server maps paths to
// files, so anything that could mean two different things is refused instead of resolved —
// ".." in any spelling (including "%2e%2e"), an encoded '/' or '\' ("%2f", "%5c"), NUL, and bytes
// that are not percent-encoded where they must be.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aggrik8s::netboot {

inline constexpr std::size_t http_max_target_length = 4096;

struct HttpRequestTarget {
  std::string path;  // decoded, starts with '/', no empty, "." or ".." segments; a trailing '/' is kept
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::string refusal;  // why the target is refused (answered with 400); empty when ok
  bool too_long = false;  // refused for its length: 414 (RFC 9110 15.5.15), not 400
  bool ok() const { return refusal.empty(); }
  // The first value of `name`, if present.
  std::optional<std::string> query_value(std::string_view name) const;
  // Path segments: "/a/b/" -> {"a", "b"}.
  std::vector<std::string> segments() const;
};

// Accepts the origin-form ("/path?query") and the absolute-form ("http://host:port/path?query", RFC
// 9112 3.2.2), whose authority is not checked.
HttpRequestTarget parse_http_request_target(std::string_view target);
// The origin-form part of an absolute-form target ("http://h/a?b" -> "/a?b", "http://h" -> "/");
// any other target unchanged.
std::string_view http_origin_form(std::string_view target);

// IMF-fixdate, as in Date and Last-Modified: "Sun, 06 Dec 2026 04:05:06 GMT".
std::string format_http_date(std::int64_t unix_seconds);
// RFC 9110 13.1.5: whether a Range may be honoured given the request's If-Range value, the
// representation's strong ETag and its Last-Modified ("" when it has none: then only an exact match
// of the other could allow it). When false the Range is ignored and the whole file sent with 200.
bool http_if_range_allows_range(std::string_view if_range, std::string_view etag, std::string_view last_modified);

// IMF-fixdate back to Unix seconds; nullopt for anything else (RFC 9110 13.1.3/13.1.4: a conditional
// header whose date is not valid is ignored). The obsolete RFC 850 and asctime forms are not read.
std::optional<std::int64_t> parse_http_date(std::string_view text);

// The conditional request headers of RFC 9110 13.1, "" when absent.
struct HttpConditions {
  std::string if_match;
  std::string if_none_match;
  std::string if_modified_since;
  std::string if_unmodified_since;
};
enum class HttpPreconditionResult { proceed, not_modified, failed };
// RFC 9110 13.2.2, for a GET or HEAD of a representation with a strong `etag` and `modified` time:
// If-Match (strong comparison), else If-Unmodified-Since -> failed (412); then If-None-Match (weak
// comparison), else If-Modified-Since -> not_modified (304); else proceed (If-Range is evaluated after).
HttpPreconditionResult evaluate_http_preconditions(const HttpConditions& conditions, std::string_view etag,
                                                   std::int64_t modified);

// "%41" -> "A". nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text);
// For URLs the server writes into scripts: keeps unreserved characters and '/', escapes the rest.
std::string percent_encode_path(std::string_view text);

// One byte range, inclusive at both ends (as in Content-Range).
struct HttpByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t length() const { return last - first + 1; }
};

enum class HttpRangeKind {
  whole,          // no Range header, or one the server may ignore (RFC 9110 14.2): send 200 and everything
  partial,        // send 206 with `range`
  unsatisfiable,  // send 416 with "Content-Range: bytes */size"
};

struct HttpRangeRequest {
  HttpRangeKind kind = HttpRangeKind::whole;
  HttpByteRange range;
};

// Understands "bytes=first-last", "bytes=first-" and "bytes=-suffix". Several ranges are answered with
// the whole file (allowed, and boot clients never ask for them); malformed headers likewise.
HttpRangeRequest parse_http_range(std::string_view header, std::uint64_t file_size);

}  // namespace aggrik8s::netboot
