#include "netboot/tftp/tftp_block_reader.hpp"

#include <fcntl.h>

#include <catch2/catch.hpp>

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
