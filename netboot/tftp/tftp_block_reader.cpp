#include "netboot/tftp/tftp_block_reader.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s::netboot {
namespace {

std::size_t pread_full(int fd, std::uint8_t* out, std::size_t size, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_system_error("TFTP read at offset " + std::to_string(offset + done), errno);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

class OctetBlockReader final : public TftpBlockReader {
 public:
  OctetBlockReader(int fd, std::uint16_t blksize) : fd_(fd), blksize_(blksize) {}
  std::size_t read_block(std::uint64_t block, std::span<std::uint8_t> out) override {
    return pread_full(fd_, out.data(), out.size(), (block - 1) * blksize_);
  }

  std::size_t read_blocks(std::uint64_t first, std::size_t blksize, std::span<std::uint8_t> out, std::size_t stride,
                          std::span<std::size_t> sizes) override {
    std::size_t count = std::min(sizes.size(), static_cast<std::size_t>(IOV_MAX));
    if (count == 0) return 0;
    if (blksize != blksize_ || (count - 1) * stride + blksize_ > out.size()) {
      throw Error("TFTP window read does not fit its buffer");
    }
    iovecs_.resize(count);
    for (std::size_t i = 0; i < count; ++i) iovecs_[i] = iovec{out.data() + i * stride, blksize_};
    std::uint64_t offset = (first - 1) * blksize_;
    ssize_t n;
    do {
      n = ::preadv(fd_, iovecs_.data(), static_cast<int>(count), static_cast<off_t>(offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_system_error("TFTP read at offset " + std::to_string(offset), errno);
    // Whole blocks that arrived; a short count from a regular file means its end (or, rarely, an
    // interrupted read), so the block it stops in is read again on its own, which tells the two apart.
    auto got = static_cast<std::size_t>(n);
    std::size_t full = std::min(count, got / blksize_);
    for (std::size_t i = 0; i < full; ++i) sizes[i] = blksize_;
    if (full == count) return count;
    sizes[full] = read_block(first + full, out.subspan(full * stride, blksize_));
    if (sizes[full] < blksize_ || full + 1 == count) return full + 1;
    return full + 1 + read_blocks(first + full + 1, blksize, out.subspan((full + 1) * stride), stride,
                                  sizes.subspan(full + 1));
  }

 private:
  int fd_;
  std::uint16_t blksize_;
  std::vector<iovec> iovecs_;
};

// netascii (RFC 764 via RFC 1350): LF goes out as CR LF and a bare CR as CR NUL. Output blocks no longer
// line up with file offsets, so each block's starting point (file offset, plus the second half of a
// pair split across the block boundary) is remembered until the block is acknowledged.
class NetasciiBlockReader final : public TftpBlockReader {
 public:
  NetasciiBlockReader(int fd, std::uint16_t blksize) : fd_(fd), raw_(blksize) { starts_[1] = Start{}; }

  std::size_t read_block(std::uint64_t block, std::span<std::uint8_t> out) override {
    auto found = starts_.find(block);
    if (found == starts_.end()) {
      throw Error("TFTP netascii block " + std::to_string(block) + " requested out of order");
    }
    Start start = found->second;
    std::size_t position = 0;
    if (start.pending) {
      out[position++] = *start.pending;
      start.pending.reset();
    }
    while (position < out.size()) {
      std::size_t got = pread_full(fd_, raw_.data(), out.size() - position, start.offset);
      if (got == 0) break;
      for (std::size_t i = 0; i < got && position < out.size(); ++i) {
        std::uint8_t byte = raw_[i];
        ++start.offset;
        std::optional<std::uint8_t> second;
        if (byte == '\n') {
          out[position++] = '\r';
          second = '\n';
        } else if (byte == '\r') {
          out[position++] = '\r';
          second = '\0';
        } else {
          out[position++] = byte;
        }
        if (second) {
          if (position < out.size()) {
            out[position++] = *second;
          } else {
            start.pending = second;
          }
        }
      }
    }
    starts_[block + 1] = start;
    return position;
  }

  void forget_before(std::uint64_t block) override { starts_.erase(starts_.begin(), starts_.lower_bound(block)); }

 private:
  struct Start {
    std::uint64_t offset = 0;
    std::optional<std::uint8_t> pending;
  };
  int fd_;
  std::vector<std::uint8_t> raw_;
  std::map<std::uint64_t, Start> starts_;
};

}  // namespace

std::size_t TftpBlockReader::read_blocks(std::uint64_t first, std::size_t blksize, std::span<std::uint8_t> out,
                                         std::size_t stride, std::span<std::size_t> sizes) {
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    sizes[i] = read_block(first + i, out.subspan(i * stride, blksize));
    if (sizes[i] < blksize) return i + 1;
  }
  return sizes.size();
}

std::unique_ptr<TftpBlockReader> TftpBlockReader::create(int fd, TftpMode mode, std::uint16_t blksize) {
  if (mode == TftpMode::netascii) return std::make_unique<NetasciiBlockReader>(fd, blksize);
  return std::make_unique<OctetBlockReader>(fd, blksize);
}

}  // namespace aggrik8s::netboot
