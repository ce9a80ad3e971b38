// libFuzzer target for the HTTP request path: whatever a client sends as a request-target either is
// refused or becomes a path that starts with '/', has no "." or ".." segment and no NUL or backslash —
// the properties the file routes rely on. The first line of the input is also tried as a Range header.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "netboot/http/http_request_target.hpp"

using namespace aggrik8s::netboot;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  HttpRequestTarget target = parse_http_request_target(input);
  if (target.ok()) {
    const std::string& path = target.path;
    if (path.empty() || path.front() != '/') std::abort();
    if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos) std::abort();
    if (path.find("//") != std::string::npos) std::abort();
    for (const auto& segment : target.segments()) {
      if (segment == "." || segment == "..") std::abort();
    }
    // Writing the path back out and reading it again gives the same path (when escaping it did not
    // push it past the length limit).
    std::string encoded = percent_encode_path(path);
    if (encoded.size() <= http_max_target_length) {
      HttpRequestTarget again = parse_http_request_target(encoded);
      if (!again.ok() || again.path != path) std::abort();
    }
  } else if (target.refusal.empty()) {
    std::abort();
  }

  std::uint64_t file_size = size * 37;
  HttpRangeRequest range = parse_http_range(input.substr(0, input.find('\n')), file_size);
  if (range.kind == HttpRangeKind::partial) {
    if (range.range.first > range.range.last || range.range.last >= file_size) std::abort();
  }
  return 0;
}
