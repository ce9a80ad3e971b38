#pragma once
// Reads the payload of DATA block N from the file with pread(), so a 100 MB initramfs is never held in
// memory and a retransmission of any unacknowledged block costs at most one read. Octet files are read
// ahead `read_ahead` bytes at a time (one system call per many blocks); netascii block by block.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>

#include "netboot/tftp/tftp_packet.hpp"

namespace aggrik8s::netboot {

class TftpBlockReader {
 public:
  virtual ~TftpBlockReader() = default;

  // Fills `out` (blksize bytes) with block `block` (numbered from 1); a result below out.size() means
  // this is the last block. Throws aggrik8s::Error on a read error.
  virtual std::size_t read_block(std::uint64_t block, std::span<std::uint8_t> out) = 0;

  // Fills up to sizes.size() consecutive blocks from `first`: block first+i's payload goes to
  // out[i * stride, i * stride + blksize) and its size to sizes[i]. Stops after the last (short) block;
  // returns how many blocks were filled.
  virtual std::size_t read_blocks(std::uint64_t first, std::size_t blksize, std::span<std::uint8_t> out,
                                  std::size_t stride, std::span<std::size_t> sizes);

  // Blocks before `block` are acknowledged and will not be asked for again.
  virtual void forget_before(std::uint64_t block) { (void)block; }

  // `fd` is borrowed: the transfer that owns the file outlives the reader.
  static constexpr std::size_t default_read_ahead = 128 * 1024;
  // `size`: the octet file's length when the transfer began, which the OACK's tsize promised; the
  // transfer ends there, and a file found shorter (truncated while it was sent) is a read error rather
  // than a short last block that would end the transfer as a success.
  static std::unique_ptr<TftpBlockReader> create(int fd, TftpMode mode, std::uint16_t blksize,
                                                 std::size_t read_ahead = default_read_ahead,
                                                 std::optional<std::uint64_t> size = std::nullopt);
};

}  // namespace aggrik8s::netboot
