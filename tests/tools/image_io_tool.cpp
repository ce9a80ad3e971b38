// Runs one image I/O stage on its own, for benchmarks against xz, zstd and bmaptool:
//   image_io_tool decompress INPUT OUTPUT [--threads N]
//   image_io_tool compress IMAGE OUTPUT (--zstd|--xz) [--level N] [--threads N] [--xz-block-size BYTES]
//   image_io_tool bmap IMAGE OUTPUT.bmap [--threads N] [--keep-zero-blocks]
//   image_io_tool check-bmap FILE.bmap
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/image_compressor.hpp"
#include "disk/image_decompressor.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: image_io_tool decompress INPUT OUTPUT [--threads N]\n"
               "       image_io_tool compress IMAGE OUTPUT (--zstd|--xz) [--level N] [--threads N] "
               "[--xz-block-size BYTES]\n"
               "       image_io_tool bmap IMAGE OUTPUT.bmap [--threads N] [--keep-zero-blocks]\n"
               "       image_io_tool check-bmap FILE.bmap\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage();
  aggrik8s::set_progress_mode(aggrik8s::ProgressMode::off);
  unsigned threads = 0;
  std::optional<int> level;
  std::uint64_t xz_block_size = 0;
  bool xz = false;
  bool keep_zero_blocks = false;
  std::vector<std::string> positional;
  for (std::size_t i = 1; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw aggrik8s::Error(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--threads") {
      threads = static_cast<unsigned>(std::stoul(value()));
    } else if (args[i] == "--level") {
      level = std::stoi(value());
    } else if (args[i] == "--xz-block-size") {
      xz_block_size = aggrik8s::parse_byte_size(value()).value_or(0);
    } else if (args[i] == "--xz") {
      xz = true;
    } else if (args[i] == "--zstd") {
      xz = false;
    } else if (args[i] == "--keep-zero-blocks") {
      keep_zero_blocks = true;
    } else {
      positional.push_back(args[i]);
    }
  }
  try {
    const std::string& command = args[0];
    if (command == "decompress" && positional.size() == 2) {
      auto result = aggrik8s::ImageDecompressor({threads}).decompress(positional[0], positional[1]);
      std::printf("%s: %llu bytes, %llu written\n", aggrik8s::to_string(result.format),
                  static_cast<unsigned long long>(result.size), static_cast<unsigned long long>(result.written_bytes));
    } else if (command == "compress" && positional.size() == 2) {
      aggrik8s::ImageCompressionOptions options;
      options.format = xz ? aggrik8s::ImageCompressionFormat::xz : aggrik8s::ImageCompressionFormat::zstd;
      options.level = level;
      options.threads = threads;
      options.xz_block_size = xz_block_size;
      auto result = aggrik8s::ImageCompressor(options).compress(positional[0], positional[1]);
      std::printf("%llu -> %llu bytes, sha256 %s\n", static_cast<unsigned long long>(result.image_size),
                  static_cast<unsigned long long>(result.compressed_size), result.sha256.hex().c_str());
    } else if (command == "bmap" && positional.size() == 2) {
      aggrik8s::BmapOptions options;
      options.threads = threads;
      options.skip_zero_blocks = !keep_zero_blocks;
      auto bmap = aggrik8s::create_bmap(positional[0], options);
      aggrik8s::write_bmap_file(bmap, positional[1]);
      std::printf("%llu of %llu blocks mapped in %zu ranges\n", static_cast<unsigned long long>(bmap.mapped_blocks_count()),
                  static_cast<unsigned long long>(bmap.blocks_count()), bmap.ranges.size());
    } else if (command == "check-bmap" && positional.size() == 1) {
      auto bmap = aggrik8s::read_bmap_file(positional[0]);
      std::printf("valid: %llu bytes, %llu of %llu blocks mapped in %zu ranges\n",
                  static_cast<unsigned long long>(bmap.image_size),
                  static_cast<unsigned long long>(bmap.mapped_blocks_count()),
                  static_cast<unsigned long long>(bmap.blocks_count()), bmap.ranges.size());
    } else {
      return usage();
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "image_io_tool: %s\n", error.what());
    return 1;
  }
  return 0;
}
