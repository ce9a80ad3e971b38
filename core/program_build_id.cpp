#include "core/program_build_id.hpp"

#include <elf.h>
#include <link.h>

#include <cstdint>
#include <cstring>
#include <span>

#include "core/sha256.hpp"

namespace aggrik8s {
namespace {

// Note entries are 4-byte aligned in the 64-bit and 32-bit ABIs alike (the GNU toolchain's notes).
std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

std::optional<std::string> build_id_in_note(std::span<const std::uint8_t> note) {
  std::size_t at = 0;
  while (at + sizeof(ElfW(Nhdr)) <= note.size()) {
    ElfW(Nhdr) header;
    std::memcpy(&header, note.data() + at, sizeof header);
    std::size_t name_at = at + sizeof header;
    std::size_t desc_at = name_at + align4(header.n_namesz);
    std::size_t next = desc_at + align4(header.n_descsz);
    if (next > note.size() || desc_at + header.n_descsz > note.size()) return std::nullopt;
    if (header.n_type == NT_GNU_BUILD_ID && header.n_namesz == 4 &&
        std::memcmp(note.data() + name_at, "GNU", 4) == 0 && header.n_descsz > 0) {
      return to_hex(note.subspan(desc_at, header.n_descsz));
    }
    at = next;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> program_build_id() {
  std::optional<std::string> found;
  // The first object dl_iterate_phdr reports is the main program.
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto& out = *static_cast<std::optional<std::string>*>(data);
        for (ElfW(Half) i = 0; i < info->dlpi_phnum && !out; ++i) {
          const ElfW(Phdr)& segment = info->dlpi_phdr[i];
          if (segment.p_type != PT_NOTE) continue;
          auto* start = reinterpret_cast<const std::uint8_t*>(info->dlpi_addr + segment.p_vaddr);
          out = build_id_in_note({start, segment.p_memsz});
        }
        return 1;
      },
      &found);
  return found;
}

}  // namespace aggrik8s
