#pragma once
// Little-endian loads and stores for on-disk structures (MBR, GPT, FAT, ext4) and wire formats.
// Byte by byte rather than memcpy + byteswap: the code is correct on any host, needs no alignment,
// and compilers turn it into a single load/store on little-endian machines anyway.
//
// The span overloads take an offset and check it: a structure read from an untrusted image must never
// read outside its buffer. A failed check is a bug in the caller (it should have validated sizes), so
// it throws std::out_of_range rather than aggrik8s::Error.
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

namespace aggrik8s {

inline std::uint16_t load_le16(const std::uint8_t* bytes) {
  return static_cast<std::uint16_t>(bytes[0] | (bytes[1] << 8));
}

inline std::uint32_t load_le32(const std::uint8_t* bytes) {
  return static_cast<std::uint32_t>(bytes[0]) | (static_cast<std::uint32_t>(bytes[1]) << 8) |
         (static_cast<std::uint32_t>(bytes[2]) << 16) | (static_cast<std::uint32_t>(bytes[3]) << 24);
}

inline std::uint64_t load_le64(const std::uint8_t* bytes) {
  return static_cast<std::uint64_t>(load_le32(bytes)) |
         (static_cast<std::uint64_t>(load_le32(bytes + 4)) << 32);
}

inline void store_le16(std::uint8_t* bytes, std::uint16_t value) {
  bytes[0] = static_cast<std::uint8_t>(value);
  bytes[1] = static_cast<std::uint8_t>(value >> 8);
}

inline void store_le32(std::uint8_t* bytes, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

inline void store_le64(std::uint8_t* bytes, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

namespace endian_detail {
inline void check_range(std::size_t buffer_size, std::size_t offset, std::size_t width) {
  if (offset > buffer_size || buffer_size - offset < width) {
    throw std::out_of_range("little-endian access of " + std::to_string(width) + " bytes at offset " +
                            std::to_string(offset) + " in a buffer of " + std::to_string(buffer_size) +
                            " bytes");
  }
}
}  // namespace endian_detail

inline std::uint16_t load_le16(std::span<const std::uint8_t> bytes, std::size_t offset) {
  endian_detail::check_range(bytes.size(), offset, 2);
  return load_le16(bytes.data() + offset);
}

inline std::uint32_t load_le32(std::span<const std::uint8_t> bytes, std::size_t offset) {
  endian_detail::check_range(bytes.size(), offset, 4);
  return load_le32(bytes.data() + offset);
}

inline std::uint64_t load_le64(std::span<const std::uint8_t> bytes, std::size_t offset) {
  endian_detail::check_range(bytes.size(), offset, 8);
  return load_le64(bytes.data() + offset);
}

inline void store_le16(std::span<std::uint8_t> bytes, std::size_t offset, std::uint16_t value) {
  endian_detail::check_range(bytes.size(), offset, 2);
  store_le16(bytes.data() + offset, value);
}

inline void store_le32(std::span<std::uint8_t> bytes, std::size_t offset, std::uint32_t value) {
  endian_detail::check_range(bytes.size(), offset, 4);
  store_le32(bytes.data() + offset, value);
}

inline void store_le64(std::span<std::uint8_t> bytes, std::size_t offset, std::uint64_t value) {
  endian_detail::check_range(bytes.size(), offset, 8);
  store_le64(bytes.data() + offset, value);
}

}  // namespace aggrik8s

// Big-endian (network order) loads and stores, for wire protocols such as TFTP.
namespace aggrik8s {

inline std::uint16_t load_be16(const std::uint8_t* bytes) {
  return static_cast<std::uint16_t>((bytes[0] << 8) | bytes[1]);
}

inline std::uint32_t load_be32(const std::uint8_t* bytes) {
  return (static_cast<std::uint32_t>(bytes[0]) << 24) | (static_cast<std::uint32_t>(bytes[1]) << 16) |
         (static_cast<std::uint32_t>(bytes[2]) << 8) | static_cast<std::uint32_t>(bytes[3]);
}

inline void store_be16(std::uint8_t* bytes, std::uint16_t value) {
  bytes[0] = static_cast<std::uint8_t>(value >> 8);
  bytes[1] = static_cast<std::uint8_t>(value);
}

inline void store_be32(std::uint8_t* bytes, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<std::uint8_t>(value >> (8 * (3 - i)));
}

}  // namespace aggrik8s
