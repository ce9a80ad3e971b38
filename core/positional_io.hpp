#pragma once
// pread/pwrite/write until the whole buffer is done: each may transfer less than asked (signals,
// large requests, pipes), and every image reader and writer needs the same loop with the same errors
// naming the file.
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace aggrik8s {

// Fills buffer with length bytes at offset of fd, or throws Error naming `name`: the system error
// with the offset, or "unexpected end of file at offset N" when the file ends first.
void pread_exactly(int fd, std::uint64_t offset, void* buffer, std::size_t length, const std::string& name);

// The same, but a file that ends first is not an error: returns how many bytes were read (fewer than
// length only at the end of the file).
std::size_t pread_up_to(int fd, std::uint64_t offset, void* buffer, std::size_t length, const std::string& name);

// Writes length bytes at offset of fd, or throws Error naming `name` and the offset.
void pwrite_all(int fd, std::uint64_t offset, const void* data, std::size_t length, const std::string& name);

// Writes length bytes at fd's file position (a file written front to back, a pipe, a memfd), or
// throws Error "cannot write `name`" with the system error.
void write_all(int fd, const void* data, std::size_t length, const std::string& name);

// The loops alone, for callers whose errors say more than the functions above (a flash target that
// may have been removed, an input image's typed errors): `error(errno, offset)` returns the exception
// to throw. pread_loop returns the bytes read, fewer than length only at the end of the file;
// pwrite_loop the bytes written, fewer only where pwrite wrote nothing (a device smaller than it
// claims), which the caller reports.
template <class MakeError>
std::size_t pread_loop(int fd, std::uint64_t offset, void* buffer, std::size_t length, MakeError&& error) {
  auto* bytes = static_cast<char*>(buffer);
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, bytes + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw error(errno, offset + done);
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

template <class MakeError>
std::size_t pwrite_loop(int fd, std::uint64_t offset, const void* data, std::size_t length, MakeError&& error) {
  const auto* bytes = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = ::pwrite(fd, bytes + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw error(errno, offset + done);
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

}  // namespace aggrik8s
