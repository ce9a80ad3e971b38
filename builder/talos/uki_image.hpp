#pragma once
// Unified kernel images (systemd-stub + .osrel/.cmdline/.linux/.initrd... sections in one PE file, as
// Talos' imager and ukify build them): reading and editing their kernel command line. Pure code.
//
// A UKI may have several .cmdline sections: the base one and one per UKI profile (Talos >= 1.10 adds
// profiles such as "reset"); an edit applies to each, as a GRUB edit applies to every menu entry.
// Any edit voids the Authenticode signature Secure Boot checks: it is removed, not left broken, and
// EditedUki says so (docs/proxmox.md explains what that means for Secure Boot).
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

// Each .cmdline section's command line, in section table order (trailing NULs and blanks removed).
// Throws Error when `uki` is not a PE file or has no .cmdline section.
std::vector<std::string> uki_command_lines(std::span<const std::uint8_t> uki);

// `command_line` with each of `add_args` that is not already in it appended, the rest kept as written.
std::string uki_command_line_with(const std::string& command_line, const std::vector<std::string>& add_args);

struct UkiEdit {
  std::vector<std::string> add_args;  // appended to every .cmdline (those not already there)
  std::string append_to_initrd;       // e.g. a newc cpio, concatenated (4-byte aligned) to .initrd
};

struct EditedUki {
  std::vector<std::uint8_t> image;
  std::vector<std::string> command_lines;  // after the edit
  bool signature_removed = false;
};

// Throws Error naming the UKI's problem (not a PE file, no .cmdline, no .initrd to append to, a
// section that cannot grow).
EditedUki edit_uki(std::span<const std::uint8_t> uki, const UkiEdit& edit);

// The last step of edit_uki on its own: `append` concatenated (4-byte aligned) to the one .initrd.
// edit_uki(u, {args, a}) == append_to_uki_initrd(edit_uki(u, {args, ""}).image, a), so nodes with the
// same arguments share the command-line edit and only append their own archive.
std::vector<std::uint8_t> append_to_uki_initrd(std::span<const std::uint8_t> uki, std::string_view append);

// The same bytes, written into `out`, with `initrd` as scratch for the new section: both buffers keep
// their capacity from one call to the next, so a build that appends each node's archive to a 47 MiB
// UKI does not fault in two fresh buffers per node (docs/benchmarks.md, Talos section). Neither may be
// `uki`'s storage.
void append_to_uki_initrd(std::span<const std::uint8_t> uki, std::string_view append, std::vector<std::uint8_t>& out,
                          std::vector<std::uint8_t>& initrd);

// Where append_to_uki_initrd(base, a) puts an archive `a` of `append_size` bytes: the .initrd section
// is zero-padded so that every archive ending in the same 4 KiB gives a UKI of the same layout, and
// such UKIs differ only in [archive_offset, archive_offset + length) (the archive, then zeros) and in
// the checksum-balancing word at balance_offset (their CheckSum fields are equal). nullopt when the
// UKI cannot be balanced (a FileAlignment under 8, an odd raw offset).
struct UkiAppendSlot {
  std::size_t archive_offset = 0;  // file offsets in the edited UKI
  std::size_t length = 0;
  std::size_t balance_offset = 0;
  std::size_t image_size = 0;      // of the edited UKI
  friend bool operator==(const UkiAppendSlot&, const UkiAppendSlot&) = default;
};
std::optional<UkiAppendSlot> uki_append_slot(std::span<const std::uint8_t> base, std::size_t append_size);

// The bytes of another archive's UKI in `slot`, from those of a UKI already edited with the same slot
// (`edited_region`: its [archive_offset, +length); `edited_balance`: its 2 bytes at balance_offset):
// `region` gets `append` and zeros, `balance` the word that keeps the CheckSum. The checksum is a sum
// of words, so the new word follows from the old one and the two regions' sums, without reading the
// rest of the UKI. Equal to append_to_uki_initrd(base, append) at those offsets (and so everywhere).
struct UkiSlotBytes {
  std::vector<std::uint8_t> region;
  std::array<std::uint8_t, 2> balance{};
};
UkiSlotBytes uki_slot_bytes(const UkiAppendSlot& slot, std::span<const std::uint8_t> edited_region,
                            std::span<const std::uint8_t, 2> edited_balance, std::string_view append);

}  // namespace aggrik8s::builder
