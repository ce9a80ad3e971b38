#include "core/positional_io.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace aggrik8s {

std::size_t pread_up_to(int fd, std::uint64_t offset, void* buffer, std::size_t length, const std::string& name) {
  return pread_loop(fd, offset, buffer, length, [&](int err, std::uint64_t at) {
    return Error(name + ": read at offset " + std::to_string(at) + " failed: " + std::strerror(err));
  });
}

void pread_exactly(int fd, std::uint64_t offset, void* buffer, std::size_t length, const std::string& name) {
  std::size_t done = pread_up_to(fd, offset, buffer, length, name);
  if (done < length) {
    throw Error(name + ": unexpected end of file at offset " + std::to_string(offset + done) +
                " (did it shrink while it was being read?)");
  }
}

void pwrite_all(int fd, std::uint64_t offset, const void* data, std::size_t length, const std::string& name) {
  auto failed = [&](int err, std::uint64_t at) {
    return Error(name + ": write at offset " + std::to_string(at) + " failed: " + std::strerror(err));
  };
  const std::size_t done = pwrite_loop(fd, offset, data, length, failed);
  // A zero-byte write of a non-empty buffer would loop forever; report it as the device does.
  if (done < length) throw failed(EIO, offset + done);
}

void write_all(int fd, const void* data, std::size_t length, const std::string& name) {
  const auto* bytes = static_cast<const char*>(data);
  for (std::size_t done = 0; done < length;) {
    ssize_t n = ::write(fd, bytes + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_system_error("cannot write " + name, n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace aggrik8s
