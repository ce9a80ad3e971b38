#pragma once
// Reading chunk i + 1 on another thread while chunk i is being used: reading a file and writing one
// are each a copy (through the page cache or to the disk), so the two run on two cores instead of
// one after the other. Used where the builder streams large files (ext4 preload, node image copies).
#include <cstddef>
#include <future>

namespace aggrik8s {

// Calls read(i) and then use(i) for i = 0 .. count - 1, with read(i + 1) running on another thread
// during use(i). read(i) and use(i) must only touch what belongs to chunk i (e.g. buffer i % 2).
// An exception from either ends the loop and propagates, after any read still running has finished.
template <typename Read, typename Use>
void for_each_read_ahead(std::size_t count, Read read, Use use) {
  std::future<void> next;
  if (count > 0) read(std::size_t{0});
  for (std::size_t index = 0; index < count; ++index) {
    if (next.valid()) next.get();
    if (index + 1 < count) next = std::async(std::launch::async, read, index + 1);
    use(index);
  }
}

}  // namespace aggrik8s
