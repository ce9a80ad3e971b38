#pragma once
// Sizes as users write them in profiles and flags: "8GiB", "512M", "4096". Binary units (KiB = 1024)
// for both the IEC and the short forms, as dd, truncate and sfdisk read them.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace aggrik8s {

std::optional<std::uint64_t> parse_byte_size(std::string_view text);
// "1.5 GiB", "512 MiB", "0 B": for logs and inspect output.
std::string format_byte_size(std::uint64_t bytes);

// `value` rounded up to a multiple of `unit` (a block, a sector, an alignment); unit > 0.
constexpr std::uint64_t round_up(std::uint64_t value, std::uint64_t unit) { return (value + unit - 1) / unit * unit; }

}  // namespace aggrik8s
