#pragma once
// PE/COFF images (EFI applications such as systemd-boot and unified kernel images) read and edited in
// memory. Pure code: bytes in, bytes out. Enough of the format to replace a data section's contents
// the way ukify/objcopy lay sections out, and to drop an Authenticode signature that the edit voids;
// not a linker (no symbols, no imports are touched).
//
// Every malformed input is refused with an Error naming the field and its file offset
// ("PE: section 3 (.linux) raw data 0x1200+0x800000 at offset 0x1d4 runs past the end of the file (...)").
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aggrik8s::builder {

struct PeSection {
  std::string name;  // the 8-byte name without trailing NULs (".cmdline")
  std::uint32_t virtual_size = 0;
  std::uint32_t virtual_address = 0;  // RVA
  std::uint32_t raw_size = 0;         // SizeOfRawData
  std::uint32_t raw_offset = 0;       // PointerToRawData
  std::uint32_t characteristics = 0;
  std::size_t header_offset = 0;  // where its 40-byte header is in the file
};

struct PeDataDirectory {
  std::uint32_t address = 0;  // an RVA, except for the certificate table (a file offset)
  std::uint32_t size = 0;
};

struct PeLayout {
  bool pe32_plus = false;
  std::size_t coff_offset = 0;      // the "PE\0\0" signature
  std::size_t optional_offset = 0;  // the optional header
  std::uint32_t entry_point = 0;
  std::uint32_t section_alignment = 0;
  std::uint32_t file_alignment = 0;
  std::uint32_t size_of_image = 0;
  std::uint32_t size_of_headers = 0;
  std::uint32_t checksum = 0;
  std::vector<PeDataDirectory> directories;  // NumberOfRvaAndSizes entries
  std::vector<PeSection> sections;           // in section table order

  // Data directory 4: an Authenticode signature (Secure Boot) when size != 0.
  bool signed_image() const { return directories.size() > 4 && directories[4].size != 0; }
};

inline constexpr std::uint32_t pe_section_code = 0x00000020;              // IMAGE_SCN_CNT_CODE
inline constexpr std::uint32_t pe_section_initialized_data = 0x00000040;  // IMAGE_SCN_CNT_INITIALIZED_DATA
inline constexpr std::uint32_t pe_section_execute = 0x20000000;           // IMAGE_SCN_MEM_EXECUTE

// Parses and checks the headers and section table. Throws Error on anything malformed.
PeLayout parse_pe(std::span<const std::uint8_t> image);

// A section's contents as loaded: virtual_size bytes, zero-filled past its raw data.
std::vector<std::uint8_t> pe_section_contents(std::span<const std::uint8_t> image, const PeSection& section);

// The value of the optional header's CheckSum field for `image` (the field itself counts as zero).
std::uint32_t pe_checksum(std::span<const std::uint8_t> image);
// The plain sum of `bytes` as little-endian 16-bit words (an odd last byte counts alone), not folded:
// what the PE checksum folds, for bytes starting at an even file offset.
std::uint64_t pe_word_sum(std::span<const std::uint8_t> bytes);

// Sets the 16-bit word at `word_offset` so that the image's sum of words folds to 0xffff, and CheckSum
// to that plus the file size: every image of one size balanced this way has the same CheckSum whatever
// else differs, so per-node UKIs differ only where their content does (docs/benchmarks.md, Talos
// section). The word must lie where the loader reads nothing (raw data past a section's VirtualSize),
// be zero, and CheckSum must hold pe_checksum(image) (as replace_pe_section leaves it). Throws Error
// otherwise (an odd offset, outside the file, not zero).
void balance_pe_checksum(std::vector<std::uint8_t>& image, std::size_t word_offset);

// The image without its certificate table (data directory 4 zeroed, its bytes cut from the end of the
// file) and with the checksum recomputed. Unchanged when there is no signature.
std::vector<std::uint8_t> remove_pe_signature(std::span<const std::uint8_t> image);

// Replaces section `index`'s contents with `contents` (its new VirtualSize), raw data padded to
// FileAlignment. When it grows past the next section's address, every section after it in memory is
// moved up by a multiple of SectionAlignment; those must be plain data (no code, no data directory, no
// base relocations in them), as the sections ukify and objcopy append to systemd-stub are. File data
// after it moves by the change in raw size. A signature is dropped (the edit voids it); SizeOfImage,
// SizeOfCode/SizeOfInitializedData and the checksum are recomputed.
std::vector<std::uint8_t> replace_pe_section(std::span<const std::uint8_t> image, std::size_t index,
                                             std::span<const std::uint8_t> contents);
// The same bytes, written into `out` (its old content dropped, its buffer reused): for callers that
// edit one large image per output, where a fresh buffer each time costs a page fault per 4 KiB
// (docs/benchmarks.md, Talos section). `out` must not be `image`'s storage.
void replace_pe_section(std::span<const std::uint8_t> image, std::size_t index, std::span<const std::uint8_t> contents,
                        std::vector<std::uint8_t>& out);

}  // namespace aggrik8s::builder
