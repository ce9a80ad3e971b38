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

}  // namespace aggrik8s
