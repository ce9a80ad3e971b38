#pragma once
// pread/pwrite/write until the whole buffer is done: each may transfer less than asked (signals,
// large requests, pipes), and every image reader and writer needs the same loop with the same errors
// naming the file.
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

}  // namespace aggrik8s
