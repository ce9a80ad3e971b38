#pragma once
// How many bytes of command line a Linux kernel image keeps, read from the image itself. Pure code:
// bytes in, a number out; every malformed input is refused with an Error naming the field and offset.
//
//   - x86 bzImage (and the .linux section of an x86 UKI): the real-mode setup header states it.
//     boot_flag 0xAA55 at 0x1FE, "HdrS" at 0x202, the boot protocol version (u16) at 0x206 and, from
//     protocol 2.06 on, cmdline_size (u32, "the maximum size of the command line without the
//     terminating zero") at 0x238: COMMAND_LINE_SIZE - 1, 2047 for every current x86-64 kernel
//     (Debian's and Talos'). Before 2.06 the limit was 255 (Documentation/arch/x86/boot.rst).
//   - arm64 Image ("ARM\x64" at 0x38) and arm64 EFI zboot images (PE "MZ" with "zimg" at 4, machine
//     0xAA64): the header does not state it; arm64's COMMAND_LINE_SIZE is 2048
//     (arch/arm64/include/uapi/asm/setup.h), so 2047 bytes. The kernel copies /chosen/bootargs (which
//     its EFI stub fills from the loader's command line) into a COMMAND_LINE_SIZE buffer and cuts the
//     rest silently.
#include <cstddef>
#include <cstdint>
#include <span>
#include <filesystem>
#include <string>

#include "core/kernel_command_line.hpp"

namespace aggrik8s::builder {


// `kernel`: the image from its first byte; the x86 header needs the first 0x23C bytes, arm64 0x40.
// Throws Error ("bzImage: ...", "arm64 zboot: ...") when it is none of the formats above or is cut short.
KernelCommandLineLimit kernel_command_line_limit(std::span<const std::uint8_t> kernel);
// The limit of the kernel in `file`; Error "<where>: ..." when it cannot be read or is not a kernel.
KernelFile read_kernel_file(const std::filesystem::path& file, const std::string& where);

// The kernel release (what `uname -r` prints and /lib/modules/<release> is named after), read from
// the banner "Linux version <release> (<builder>) ..." that every kernel carries as a string
// (init/version.c, linux_banner). A Raspberry Pi kernel (kernel8.img, kernel_2712.img) is a gzip'd
// arm64 Image: gzip, xz and zstd images are decompressed first (at most 256 MiB). Throws Error when
// there is no banner with a release followed by " (".
std::string kernel_release(std::span<const std::uint8_t> kernel);
// The same for a file; Error "<file>: ...".
std::string read_kernel_release(const std::filesystem::path& file);

}  // namespace aggrik8s::builder
