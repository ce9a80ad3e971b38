// Writes the RAM-root formats of an ext4 filesystem inside an image, for scripts/bench-squashfs and
// manual checks with unsquashfs/sqfsdiff/tar:
//   squashfs_tool squashfs IMAGE OFFSET LENGTH OUT.sqfs [--comp zstd|xz|gzip|lz4] [--block-size BYTES]
//                 [--threads N] [--fixed-time SECONDS] [--exclude PATH]... [--drop-unsupported-xattrs]
//   squashfs_tool tar IMAGE OFFSET LENGTH OUT.tar [--exclude PATH]...
// Prints the result's figures and the time of each phase (open, write) on stderr.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/squashfs_writer.hpp"
#include "disk/tar_writer.hpp"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: squashfs_tool squashfs IMAGE OFFSET LENGTH OUT.sqfs [--comp zstd|xz|gzip|lz4] "
               "[--block-size BYTES] [--threads N] [--fixed-time SECONDS] [--exclude PATH]... "
               "[--drop-unsupported-xattrs]\n"
               "       squashfs_tool tar IMAGE OFFSET LENGTH OUT.tar [--exclude PATH]...\n");
  return 2;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 5 || (args[0] != "squashfs" && args[0] != "tar")) return usage();
  try {
    aggrik8s::SquashfsWriteOptions options;
    for (std::size_t i = 5; i < args.size(); ++i) {
      auto value = [&]() -> std::string {
        if (i + 1 >= args.size()) throw aggrik8s::Error(args[i] + " needs a value");
        return args[++i];
      };
      if (args[i] == "--comp") {
        options.compressor = value();
      } else if (args[i] == "--block-size") {
        options.block_size = static_cast<std::uint32_t>(std::stoul(value()));
      } else if (args[i] == "--threads") {
        options.threads = static_cast<unsigned>(std::stoul(value()));
      } else if (args[i] == "--fixed-time") {
        options.fixed_time = std::stoll(value());
      } else if (args[i] == "--exclude") {
        options.selection.exclude.push_back(value());
      } else if (args[i] == "--drop-unsupported-xattrs") {
        options.drop_unsupported_xattrs = true;
      } else {
        return usage();
      }
    }
    auto start = std::chrono::steady_clock::now();
    auto filesystem = aggrik8s::Ext4Filesystem::open(args[1], std::stoull(args[2]), std::stoull(args[3]),
                                                     aggrik8s::Ext4Access::read_only);
    std::fprintf(stderr, "open: %.3f s\n", seconds_since(start));
    start = std::chrono::steady_clock::now();
    if (args[0] == "tar") {
      aggrik8s::TarWriteOptions tar_options;
      tar_options.selection = options.selection;
      auto result = aggrik8s::write_tar(filesystem, args[4], tar_options);
      std::fprintf(stderr, "write: %.3f s\n", seconds_since(start));
      std::printf("bytes %llu entries %llu hard_links %llu file_data_bytes %llu\n",
                  static_cast<unsigned long long>(result.bytes_written), static_cast<unsigned long long>(result.entries),
                  static_cast<unsigned long long>(result.hard_links),
                  static_cast<unsigned long long>(result.file_data_bytes));
      return 0;
    }
    auto result = aggrik8s::write_squashfs(filesystem, args[4], options);
    std::fprintf(stderr, "write (walk, compress, tables, fdatasync, sha256): %.3f s\n", seconds_since(start));
    std::printf("bytes %llu sha256 %s files %llu dirs %llu symlinks %llu special %llu hard_links %llu "
                "file_data_bytes %llu dropped_xattrs %llu\n",
                static_cast<unsigned long long>(result.bytes_written), result.sha256.c_str(),
                static_cast<unsigned long long>(result.regular_files), static_cast<unsigned long long>(result.directories),
                static_cast<unsigned long long>(result.symlinks), static_cast<unsigned long long>(result.special_files),
                static_cast<unsigned long long>(result.hard_links),
                static_cast<unsigned long long>(result.file_data_bytes),
                static_cast<unsigned long long>(result.dropped_xattrs));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "squashfs_tool: %s\n", e.what());
    return 1;
  }
}
