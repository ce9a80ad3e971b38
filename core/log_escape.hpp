#pragma once
// Client-supplied text (HTTP paths and query values, TFTP file names and ERROR messages, DHCP host
// names, vendor classes and client ids) made safe to put in one log line. Without it a request for
// "/talos/x%0aserve: stopped/config.yaml" writes a second, forged line to the journal, and ESC bytes
// drive the operator's terminal.
//
// Printable ASCII passes through except '"' and '\', which are escaped so a value can sit inside
// quotes; \n \r \t are written as such, other control bytes (C0, DEL) as \xNN. Well-formed UTF-8 is
// kept, except C1 controls (U+0080..U+009F: 8-bit CSI), line/paragraph separators and bidirectional
// overrides (which reorder how the rest of a line is displayed), written as \u{XXXX}. Every byte that
// is not part of well-formed UTF-8 (overlong forms, surrogates, truncated sequences) is \xNN. Output
// longer than `max_bytes` is cut at an escape or character boundary and ends with
// "...[truncated, N bytes]", N being the length of the original text.
#include <cstddef>
#include <string>
#include <string_view>

namespace aggrik8s {

inline constexpr std::size_t log_escape_default_limit = 256;

std::string log_escape(std::string_view text, std::size_t max_bytes = log_escape_default_limit);

}  // namespace aggrik8s
