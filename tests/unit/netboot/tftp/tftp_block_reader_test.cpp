#include "netboot/tftp/tftp_block_reader.hpp"

#include <fcntl.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/file_descriptor.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;

namespace {

std::string netascii(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "\r\n";
    } else if (c == '\r') {
      out += std::string("\r\0", 2);
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("tftp block reader: octet blocks are file slices, the last one is short", "[tftp]") {
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "f", "0123456789abcdefXYZ");
  aggrik8s::FileDescriptor fd(::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC));
  auto reader = TftpBlockReader::create(fd.get(), TftpMode::octet, 8);
  std::vector<std::uint8_t> block(8);
  CHECK(reader->read_block(2, block) == 8);
  CHECK(std::string(block.begin(), block.end()) == "89abcdef");
  CHECK(reader->read_block(3, block) == 3);
  CHECK(reader->read_block(1, block) == 8);  // any block can be read again
  CHECK(reader->read_block(4, block) == 0);
}

TEST_CASE("tftp block reader: an octet file read to the length the transfer began with", "[tftp]") {
  // Truncated while being sent, the file used to end the transfer "ok" with a short block after
  // the OACK had promised tsize; now that is a read error. A file that grew ends where tsize said.
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "f", std::string(100, 'a'));
  aggrik8s::FileDescriptor fd(::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC));
  auto reader = TftpBlockReader::create(fd.get(), TftpMode::octet, 8, 16, 100);
  std::vector<std::uint8_t> block(8);
  CHECK(reader->read_block(1, block) == 8);
  std::filesystem::resize_file(dir / "f", 40);
  CHECK_THROWS_WITH(reader->read_block(6, block), Catch::Contains("the file ended at byte 40 of the 100 it had"));
  aggrik8s::test::write_file(dir / "g", std::string(30, 'b'));
  aggrik8s::FileDescriptor grown(::open((dir / "g").c_str(), O_RDONLY | O_CLOEXEC));
  auto capped = TftpBlockReader::create(grown.get(), TftpMode::octet, 8, 16, 20);
  std::filesystem::resize_file(dir / "g", 64);
  CHECK(capped->read_block(3, block) == 4);  // bytes 16..19: where tsize said it ends
  CHECK(capped->read_block(4, block) == 0);
  auto empty = TftpBlockReader::create(grown.get(), TftpMode::octet, 8, 16, 0);
  CHECK(empty->read_block(1, block) == 0);
}

TEST_CASE("tftp block reader: netascii pairs split across blocks survive retransmission", "[tftp]") {
  aggrik8s::test::TempDir dir;
  std::string text = "abcdefg\nhij\r\n\n\n\n\n\n\n\n\rklm\n";  // CR LF pairs fall on every block boundary
  aggrik8s::test::write_file(dir / "f", text);
  aggrik8s::FileDescriptor fd(::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC));
  auto reader = TftpBlockReader::create(fd.get(), TftpMode::netascii, 8);
  std::string sent;
  std::vector<std::uint8_t> block(8);
  for (std::uint64_t number = 1;; ++number) {
    std::size_t size = reader->read_block(number, block);
    std::string first(block.begin(), block.begin() + static_cast<long>(size));
    if (number > 1) {  // the previous block again, as after a timeout, then this one again
      std::vector<std::uint8_t> again(8);
      reader->read_block(number - 1, again);
      CHECK(reader->read_block(number, again) == size);
      CHECK(std::string(again.begin(), again.begin() + static_cast<long>(size)) == first);
    }
    reader->forget_before(number);
    sent += first;
    if (size < block.size()) break;
  }
  CHECK(sent == netascii(text));
  CHECK_THROWS(reader->read_block(1, block));  // forgotten: acknowledged blocks are never re-read
}

TEST_CASE("tftp block reader: octet read-ahead gives the same bytes in any order and at any buffer edge", "[tftp]") {
  aggrik8s::test::TempDir dir;
  // Buffer sizes that split blocks, hold a few whole ones, end on the file's end or on a block edge; files
  // ending mid-block, on a block edge (an empty last block) and on the buffer's edge.
  for (std::size_t file_size : {0u, 5u, 64u, 67u, 96u, 100u}) {
    std::string content = aggrik8s::test::random_bytes(file_size, static_cast<unsigned>(file_size));
    aggrik8s::test::write_file(dir / "f", content);
    aggrik8s::FileDescriptor fd(::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC));
    for (std::size_t read_ahead : {1u, 8u, 20u, 32u, 4096u}) {
      INFO("file " << file_size << " bytes, read-ahead " << read_ahead);
      constexpr std::uint16_t blksize = 8;
      auto reader = TftpBlockReader::create(fd.get(), TftpMode::octet, blksize, read_ahead);
      std::uint64_t last = file_size / blksize + 1;
      auto expected = [&](std::uint64_t block) {
        std::size_t offset = (block - 1) * blksize;
        return content.substr(std::min(offset, content.size()), blksize);
      };
      auto read = [&](std::uint64_t block) {
        std::vector<std::uint8_t> out(blksize);
        std::size_t size = reader->read_block(block, out);
        return std::string(out.begin(), out.begin() + static_cast<long>(size));
      };
      // In order, each block then its predecessor again (a retransmission behind the buffer), then a
      // jump back to the start and forward to the end.
      for (std::uint64_t block = 1; block <= last; ++block) {
        CHECK(read(block) == expected(block));
        if (block > 1) CHECK(read(block - 1) == expected(block - 1));
      }
      CHECK(read(1) == expected(1));
      CHECK(read(last) == expected(last));
      // Windows of three blocks laid out with a 4-byte header gap, as the server's batches are.
      for (std::uint64_t first = 1; first <= last; first += 3) {
        constexpr std::size_t stride = blksize + 4;
        std::vector<std::uint8_t> batch(stride * 3);
        std::vector<std::size_t> sizes(3);
        std::size_t filled = reader->read_blocks(first, blksize, batch, stride, sizes);
        CHECK(filled == std::min<std::uint64_t>(3, last - first + 1));
        for (std::size_t i = 0; i < filled; ++i) {
          CHECK(std::string(batch.begin() + static_cast<long>(i * stride),
                            batch.begin() + static_cast<long>(i * stride + sizes[i])) == expected(first + i));
        }
      }
    }
  }
}
