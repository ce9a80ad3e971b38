#include "core/progress.hpp"

#include <catch2/catch.hpp>

#include "core/byte_size.hpp"

using namespace aggrik8s;

TEST_CASE("progress line shows bar, sizes, rate and ETA", "[progress]") {
  std::string line = format_progress("download x.img", 50ull << 20, 100ull << 20, 10.0 * (1 << 20), 120);
  CHECK(line.find("[============>           ]  50%") != std::string::npos);
  CHECK(line.find("50.0 MiB / 100 MiB") != std::string::npos);
  CHECK(line.find("10.0 MiB/s") != std::string::npos);
  CHECK(line.find("ETA 5.0 s") != std::string::npos);
  std::string unknown = format_progress("download y", 1536, std::nullopt, 0, 120);
  CHECK(unknown.find('%') == std::string::npos);
  CHECK(unknown.find("1.50 KiB") != std::string::npos);
  CHECK(format_progress(std::string(300, 'a'), 1, 2, 1, 80).size() <= 90);
}

TEST_CASE("durations and byte sizes are human-readable", "[progress]") {
  CHECK(format_duration(4.25) == "4.2 s");
  CHECK(format_duration(75) == "1:15");
  CHECK(format_duration(3725) == "1:02:05");
  CHECK(format_byte_size(0) == "0 B");
  CHECK(format_byte_size(1023) == "1023 B");
  CHECK(format_byte_size(8ull << 30) == "8.00 GiB");
  CHECK(parse_byte_size("8GiB") == (8ull << 30));
  CHECK(parse_byte_size("512M") == (512ull << 20));
  CHECK(parse_byte_size("4096") == 4096u);
  CHECK(parse_byte_size("1 G") == (1ull << 30));
  CHECK_FALSE(parse_byte_size("eight"));
  CHECK_FALSE(parse_byte_size("8 parsecs"));
  CHECK_FALSE(parse_byte_size("99999999999999999999"));
  CHECK_FALSE(parse_byte_size("20000000000T"));
}
