#pragma once
// Whole-buffer compression and decompression, for small files handled in memory: kernel images
// (gzip'd arm64 Images), kernel modules (.ko.xz, .ko.zst, .ko.gz), initramfs archives. Large images go
// through disk/image_stream.hpp instead. libarchive's filters: gzip, xz, zstd, bzip2, lz4... are told
// apart by their magic bytes.
#include <cstddef>
#include <string>
#include <string_view>

namespace aggrik8s {

// The decompressed bytes of `input`; input that is not compressed comes back unchanged. Throws Error
// "<what>: ..." when the stream is corrupt or truncated, or would decompress to more than max_bytes.
std::string decompress_in_memory(std::string_view input, std::size_t max_bytes, const std::string& what);

// gzip (RFC 1952) of `input` without a file name or time stamp in the header, so the same input
// gives the same bytes (level 1..9).
std::string gzip_in_memory(std::string_view input, int level = 9);

}  // namespace aggrik8s
