// The PE/COFF section editor and the UKI command-line edit, on PE32+ images built here byte by byte the
// way objcopy lays out a UKI: stub code and relocations first, then data sections (.osrel, .cmdline,
// .linux, .initrd) at addresses of their own.
#include <catch2/catch.hpp>
#include <cstring>

#include "builder/talos/pe_image.hpp"
#include "builder/talos/uki_image.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

using Bytes = std::vector<std::uint8_t>;

void put16(Bytes& b, std::size_t at, std::uint32_t v) {
  b[at] = static_cast<std::uint8_t>(v);
  b[at + 1] = static_cast<std::uint8_t>(v >> 8);
}
void put32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get32(const Bytes& b, std::size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (static_cast<std::uint32_t>(b[at + 3]) << 24);
}
Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

struct TestSection {
  std::string name;
  std::uint32_t rva;
  Bytes data;
  std::uint32_t characteristics = pe_section_initialized_data | 0x40000000;  // initialized, readable
};

constexpr std::size_t pe_offset = 0x80;
constexpr std::size_t optional_offset = pe_offset + 24;
constexpr std::size_t directories = optional_offset + 112;
constexpr std::size_t section_table = optional_offset + 240;

// A PE32+ EFI application: FileAlignment 0x200, SectionAlignment 0x1000, headers 0x400.
Bytes make_pe(const std::vector<TestSection>& sections, std::uint32_t reloc_rva = 0, std::uint32_t reloc_size = 0) {
  Bytes b(0x400, 0);
  b[0] = 'M';
  b[1] = 'Z';
  put32(b, 0x3c, pe_offset);
  std::memcpy(&b[pe_offset], "PE\0\0", 4);
  put16(b, pe_offset + 4, 0x8664);
  put16(b, pe_offset + 6, static_cast<std::uint32_t>(sections.size()));
  put16(b, pe_offset + 20, 240);
  put16(b, pe_offset + 22, 0x0206);
  put16(b, optional_offset, 0x20b);
  put32(b, optional_offset + 16, sections.front().rva);  // entry point in the first (code) section
  put32(b, optional_offset + 32, 0x1000);
  put32(b, optional_offset + 36, 0x200);
  put32(b, optional_offset + 60, 0x400);
  put16(b, optional_offset + 68, 10);  // EFI application
  put32(b, optional_offset + 108, 16);
  put32(b, directories + 5 * 8, reloc_rva);
  put32(b, directories + 5 * 8 + 4, reloc_size);
  std::uint32_t image_end = 0x1000;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const auto& s = sections[i];
    std::size_t h = section_table + i * 40;
    std::memcpy(&b[h], s.name.data(), std::min<std::size_t>(8, s.name.size()));
    auto raw = static_cast<std::uint32_t>((s.data.size() + 0x1ff) / 0x200 * 0x200);
    put32(b, h + 8, static_cast<std::uint32_t>(s.data.size()));
    put32(b, h + 12, s.rva);
    put32(b, h + 16, raw);
    put32(b, h + 20, static_cast<std::uint32_t>(b.size()));
    put32(b, h + 36, s.characteristics);
    b.insert(b.end(), s.data.begin(), s.data.end());
    b.resize(b.size() + (raw - s.data.size()), 0);
    image_end = std::max<std::uint32_t>(image_end, (s.rva + static_cast<std::uint32_t>(s.data.size()) + 0xfff) / 0x1000 * 0x1000);
  }
  put32(b, optional_offset + 56, image_end);
  put32(b, optional_offset + 64, pe_checksum(b));
  return b;
}

Bytes filler(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7);
  return b;
}

// A UKI as objcopy's classic recipe makes it: code + .reloc (one block for the code page), then data.
Bytes make_uki(const std::string& cmdline, const Bytes& initrd = filler(3000, 3)) {
  Bytes reloc(12, 0);
  put32(reloc, 0, 0x1000);  // page RVA of .text
  put32(reloc, 4, 12);
  return make_pe({{".text", 0x1000, filler(0x300, 1), pe_section_code | pe_section_execute | 0x40000000},
                  {".reloc", 0x2000, reloc},
                  {".osrel", 0x3000, bytes("ID=talos\n")},
                  {".cmdline", 0x4000, bytes(cmdline)},
                  {".linux", 0x5000, filler(5000, 2)},
                  {".initrd", 0x7000, initrd}},
                 0x2000, 12);
}

Bytes section(const Bytes& image, const std::string& name) {
  for (const auto& s : parse_pe(image).sections) {
    if (s.name == name) return pe_section_contents(image, s);
  }
  FAIL("no section " << name);
  return {};
}

const PeSection& find(const PeLayout& layout, const std::string& name) {
  for (const auto& s : layout.sections) {
    if (s.name == name) return s;
  }
  throw Error("no section " + name);
}

}  // namespace

TEST_CASE("pe: headers and sections of a UKI-shaped image are read", "[pe]") {
  Bytes uki = make_uki("talos.platform=metal console=tty0");
  PeLayout layout = parse_pe(uki);
  CHECK(layout.pe32_plus);
  CHECK(layout.section_alignment == 0x1000);
  CHECK(layout.file_alignment == 0x200);
  CHECK(layout.size_of_headers == 0x400);
  REQUIRE(layout.sections.size() == 6);
  CHECK(layout.sections[3].name == ".cmdline");
  CHECK(layout.sections[3].virtual_address == 0x4000);
  CHECK(layout.sections[3].raw_size == 0x200);
  CHECK_FALSE(layout.signed_image());
  CHECK(section(uki, ".cmdline") == bytes("talos.platform=metal console=tty0"));
  CHECK(layout.checksum == pe_checksum(uki));
  CHECK(uki_command_lines(uki) == std::vector<std::string>{"talos.platform=metal console=tty0"});
}

TEST_CASE("pe: replacing a section with its own contents gives the same bytes", "[pe]") {
  Bytes uki = make_uki("talos.platform=metal");
  CHECK(replace_pe_section(uki, 3, section(uki, ".cmdline")) == uki);
  // and an edit followed by its inverse as well
  Bytes edited = replace_pe_section(uki, 3, bytes("something else entirely"));
  CHECK(edited != uki);
  CHECK(replace_pe_section(edited, 3, bytes("talos.platform=metal")) == uki);
}

TEST_CASE("pe: a section grown within its slot and past the next section", "[pe]") {
  Bytes uki = make_uki("short");
  PeLayout before = parse_pe(uki);

  SECTION("within its raw size and its memory slot nothing moves") {
    Bytes out = replace_pe_section(uki, 3, bytes(std::string(400, 'a')));
    PeLayout after = parse_pe(out);
    CHECK(out.size() == uki.size());
    CHECK(find(after, ".cmdline").virtual_size == 400);
    CHECK(find(after, ".linux").virtual_address == 0x5000);
    CHECK(find(after, ".linux").raw_offset == find(before, ".linux").raw_offset);
  }
  SECTION("past its raw size: file data after it moves, addresses stay (the slot is 4 KiB)") {
    Bytes out = replace_pe_section(uki, 3, bytes(std::string(3000, 'b')));
    PeLayout after = parse_pe(out);
    CHECK(out.size() == uki.size() + 0xa00);
    CHECK(find(after, ".cmdline").raw_size == 0xc00);
    CHECK(find(after, ".linux").virtual_address == 0x5000);
    CHECK(find(after, ".linux").raw_offset == find(before, ".linux").raw_offset + 0xa00);
    CHECK(section(out, ".linux") == filler(5000, 2));
    CHECK(section(out, ".initrd") == filler(3000, 3));
    CHECK(section(out, ".cmdline") == bytes(std::string(3000, 'b')));
    CHECK(after.size_of_image == before.size_of_image);
  }
  SECTION("past the next section's address: the data sections after it move up, aligned") {
    std::string big(9000, 'c');  // 0x4000 + 9000 ends at 0x6328: .linux (0x5000) must go to 0x7000
    Bytes out = replace_pe_section(uki, 3, bytes(big));
    PeLayout after = parse_pe(out);
    CHECK(find(after, ".text").virtual_address == 0x1000);
    CHECK(find(after, ".reloc").virtual_address == 0x2000);
    CHECK(find(after, ".linux").virtual_address == 0x7000);
    CHECK(find(after, ".initrd").virtual_address == 0x9000);
    CHECK(after.size_of_image == 0xa000);
    CHECK(section(out, ".cmdline") == bytes(big));
    CHECK(section(out, ".linux") == filler(5000, 2));
    CHECK(section(out, ".initrd") == filler(3000, 3));
    CHECK(section(out, ".text") == filler(0x300, 1));
    CHECK(after.checksum == pe_checksum(out));
    CHECK(after.checksum != 0);
    // SizeOfInitializedData follows the raw size change of an initialized-data section.
    CHECK(get32(out, optional_offset + 8) == get32(uki, optional_offset + 8) + (find(after, ".cmdline").raw_size - 0x200));
  }
  SECTION("shrinking keeps every address") {
    Bytes out = replace_pe_section(uki, 3, bytes("x"));
    CHECK(find(parse_pe(out), ".linux").virtual_address == 0x5000);
    CHECK(section(out, ".cmdline") == bytes("x"));
  }
}

TEST_CASE("pe: sections that code refers to are never moved", "[pe]") {
  Bytes reloc(12, 0);
  put32(reloc, 0, 0x1000);
  put32(reloc, 4, 12);
  // .cmdline first, code after it: growing .cmdline would have to move code.
  Bytes pe = make_pe({{".cmdline", 0x1000, bytes("a")},
                      {".text", 0x2000, filler(0x100, 1), pe_section_code | pe_section_execute | 0x40000000},
                      {".reloc", 0x3000, reloc}},
                     0x3000, 12);
  CHECK_THROWS_WITH(replace_pe_section(pe, 0, bytes(std::string(5000, 'a'))),
                    Catch::Contains("cannot grow section 0 (.cmdline) to 5000 bytes") &&
                        Catch::Contains("section 1 (.text) after it at RVA 0x2000 holds code and cannot move"));
  CHECK_THROWS_WITH(replace_pe_section(pe, 2, bytes("x")), Catch::Contains("section 2 (.reloc): it holds the base relocation table"));
  CHECK_NOTHROW(replace_pe_section(pe, 0, bytes(std::string(4000, 'a'))));  // fits its slot
}

TEST_CASE("pe: a signature is dropped by an edit and by remove_pe_signature", "[pe]") {
  Bytes uki = make_uki("talos.platform=metal");
  Bytes signed_uki = uki;
  std::uint32_t cert_offset = static_cast<std::uint32_t>(signed_uki.size());
  Bytes cert = filler(0x500, 9);
  signed_uki.insert(signed_uki.end(), cert.begin(), cert.end());
  put32(signed_uki, directories + 4 * 8, cert_offset);
  put32(signed_uki, directories + 4 * 8 + 4, 0x500);
  put32(signed_uki, optional_offset + 64, pe_checksum(signed_uki));
  REQUIRE(parse_pe(signed_uki).signed_image());

  CHECK(remove_pe_signature(signed_uki) == uki);
  CHECK(remove_pe_signature(uki) == uki);
  Bytes edited = replace_pe_section(signed_uki, 3, bytes("talos.platform=metal x=1"));
  CHECK_FALSE(parse_pe(edited).signed_image());
  CHECK(edited.size() == uki.size());

  EditedUki result = edit_uki(signed_uki, {{"x=1"}, {}});
  CHECK(result.signature_removed);
  CHECK(result.image == edited);
  CHECK_FALSE(edit_uki(uki, {{"x=1"}, {}}).signature_removed);
}

TEST_CASE("pe: malformed input is refused naming the field and offset", "[pe]") {
  Bytes uki = make_uki("a");
  CHECK_THROWS_WITH(parse_pe(Bytes(10, 0)), Catch::Contains("the DOS header at offset 0x0 (64 bytes) runs past the end of the file (10 bytes)"));
  Bytes no_mz = uki;
  no_mz[0] = 'X';
  CHECK_THROWS_WITH(parse_pe(no_mz), Catch::Contains("no \"MZ\" DOS signature at offset 0x0"));
  Bytes bad_lfanew = uki;
  put32(bad_lfanew, 0x3c, 0x100000);
  CHECK_THROWS_WITH(parse_pe(bad_lfanew), Catch::Contains("(e_lfanew at offset 0x3c)") && Catch::Contains("runs past the end"));
  Bytes no_pe = uki;
  no_pe[pe_offset] = 'X';
  CHECK_THROWS_WITH(parse_pe(no_pe), Catch::Contains("no \"PE\\0\\0\" signature at offset 0x80"));
  Bytes bad_magic = uki;
  put16(bad_magic, optional_offset, 0x107);
  CHECK_THROWS_WITH(parse_pe(bad_magic), Catch::Contains("optional header magic at offset 0x98 is 0x107"));
  Bytes bad_alignment = uki;
  put32(bad_alignment, optional_offset + 36, 0x300);
  CHECK_THROWS_WITH(parse_pe(bad_alignment), Catch::Contains("FileAlignment at offset 0xbc is 0x300, not a power of two"));
  Bytes truncated(uki.begin(), uki.end() - 0x200);
  CHECK_THROWS_WITH(parse_pe(truncated), Catch::Contains("section 5 (.initrd) raw data") && Catch::Contains("runs past the end of the file"));
  Bytes overlapping = uki;
  put32(overlapping, section_table + 4 * 40 + 12, 0x4000);  // .linux onto .cmdline's address
  CHECK_THROWS_WITH(parse_pe(overlapping), Catch::Contains("section 3 (.cmdline) and section 4 (.linux) overlap in memory"));
  Bytes past_image = uki;
  put32(past_image, optional_offset + 56, 0x5000);
  CHECK_THROWS_WITH(parse_pe(past_image), Catch::Contains("ends past SizeOfImage 0x5000"));
  Bytes too_many = uki;
  put16(too_many, pe_offset + 6, 60);
  CHECK_THROWS_WITH(parse_pe(too_many), Catch::Contains("SizeOfHeaders at offset 0xd4 is 0x400, which does not cover the section table"));
  CHECK_THROWS_WITH(uki_command_lines(make_pe({{".text", 0x1000, filler(16, 1), pe_section_code}})),
                    Catch::Contains("no .cmdline section"));
}

TEST_CASE("uki: the command line of every .cmdline section gets the node's arguments", "[pe][uki]") {
  Bytes uki = make_uki("talos.platform=metal console=tty0");
  EditedUki edited = edit_uki(uki, {{"console=ttyS0", "talos.config=metal-iso", "console=tty0"}, {}});
  CHECK(edited.command_lines == std::vector<std::string>{"talos.platform=metal console=tty0 console=ttyS0 talos.config=metal-iso"});
  CHECK(uki_command_lines(edited.image) == edited.command_lines);
  CHECK(section(edited.image, ".linux") == filler(5000, 2));
  // Editing again adds nothing twice.
  CHECK(edit_uki(edited.image, {{"console=ttyS0"}, {}}).image == edited.image);

  // A NUL-terminated .cmdline stays NUL-terminated.
  Bytes with_nul = make_uki(std::string("a=1\0", 4));
  Bytes after = section(edit_uki(with_nul, {{"b=2"}, {}}).image, ".cmdline");
  CHECK(after == Bytes{'a', '=', '1', ' ', 'b', '=', '2', '\0'});

  // Several profiles, several .cmdline sections: each is edited.
  Bytes profiles = make_pe({{".text", 0x1000, filler(0x100, 1), pe_section_code},
                            {".cmdline", 0x2000, bytes("base")},
                            {".profile", 0x3000, bytes("ID=reset")},
                            {".cmdline", 0x4000, bytes("base talos.experimental.wipe=system")},
                            {".linux", 0x5000, filler(100, 2)}});
  CHECK(edit_uki(profiles, {{"x=1"}, {}}).command_lines ==
        std::vector<std::string>{"base x=1", "base talos.experimental.wipe=system x=1"});
}

TEST_CASE("uki: an archive appended to .initrd starts 4-byte aligned after the original", "[pe][uki]") {
  Bytes uki = make_uki("a", filler(1001, 3));
  EditedUki edited = edit_uki(uki, {{}, "070701cpio"});
  Bytes initrd = section(edited.image, ".initrd");
  // Zero-padded to 4 bytes short of a whole 4 KiB (the kernel skips zeros between archives).
  REQUIRE(initrd.size() == 4096 - 4);
  CHECK(Bytes(initrd.begin(), initrd.begin() + 1001) == filler(1001, 3));
  CHECK(Bytes(initrd.begin() + 1001, initrd.begin() + 1004) == Bytes(3, 0));
  CHECK(std::string(initrd.begin() + 1004, initrd.begin() + 1014) == "070701cpio");
  CHECK(Bytes(initrd.begin() + 1014, initrd.end()) == Bytes(4096 - 4 - 1014, 0));
  CHECK(pe_checksum(edited.image) == parse_pe(edited.image).checksum);
  CHECK_THROWS_WITH(edit_uki(make_pe({{".text", 0x1000, filler(16, 1), pe_section_code}, {".cmdline", 0x2000, bytes("a")}}),
                             {{}, "x"}),
                    Catch::Contains("expected one .initrd section to append to, found 0"));
}

TEST_CASE("uki: appending into reused buffers gives the bytes of a fresh append", "[pe][uki]") {
  // Buffers left larger and holding other bytes, as the previous node's edit leaves them.
  Bytes out(200000, 0xee);
  Bytes initrd(150000, 0xdd);
  for (const auto& [initrd_size, archive] : {std::pair<std::size_t, std::string>{1001, "070701first"}, {1000, "070701second-longer"},
                                             {5000, "070701"}, {1001, "070701first"}}) {
    Bytes uki = make_uki("a b", filler(initrd_size, 3));
    append_to_uki_initrd(uki, archive, out, initrd);
    CHECK(out == append_to_uki_initrd(uki, archive));
    CHECK(out == edit_uki(uki, {{}, archive}).image);
  }
  // Initrds from 8 MiB up take the scratch's huge-page path; each node's archive may be a few bytes
  // longer than the last, so the scratch grows while it holds the previous node's section.
  for (const auto& [initrd_size, archive] : {std::pair<std::size_t, std::string>{(std::size_t{9} << 20) + 1, "070701a"},
                                             {(std::size_t{9} << 20) + 3, "070701bbbbbbbbbbbbb"},
                                             {(std::size_t{11} << 20) + 7, "070701c"}}) {
    Bytes uki = make_uki("a b", filler(initrd_size, 6));
    append_to_uki_initrd(uki, archive, out, initrd);
    CHECK(out == append_to_uki_initrd(uki, archive));
  }
  // The section replacement alone, into a buffer holding a larger image.
  Bytes uki = make_uki("a", filler(3000, 4));
  Bytes reused(100000, 0xcc);
  replace_pe_section(uki, 2, filler(10, 5), reused);
  CHECK(reused == replace_pe_section(uki, 2, filler(10, 5)));
}

TEST_CASE("pe: the checksum summed eight bytes at a time equals the word-by-word definition", "[talos][pe]") {
  // The definition: 16-bit little-endian words added with end-around carry after each, the CheckSum
  // field counted as zero, then the file size added.
  auto reference = [](const Bytes& image) {
    std::size_t field = optional_offset + 64;  // CheckSum
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < image.size(); i += 2) {
      std::uint32_t word = image[i] | (i + 1 < image.size() ? static_cast<std::uint32_t>(image[i + 1]) << 8 : 0u);
      if (i >= field && i < field + 4) word = 0;
      sum += word;
      sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint32_t>((sum & 0xffff) + image.size());
  };
  // Sizes around the 8-byte steps and the lane flush (131072 bytes), odd sizes, all-0xff data (every
  // word at its maximum).
  for (std::size_t extra : {0u, 1u, 2u, 7u, 131071u, 131072u, 131073u, 400001u}) {
    for (std::uint8_t fill : {std::uint8_t{3}, std::uint8_t{0xff}}) {
      Bytes uki = make_uki("talos.platform=metal", fill == 0xff ? Bytes(extra, 0xff) : filler(extra, fill));
      uki.resize(uki.size() + extra % 3, fill);
      INFO(extra << " " << int(fill));
      CHECK(pe_checksum(uki) == reference(uki));
    }
  }
}

TEST_CASE("uki: archives ending in the same 4 KiB give UKIs of one size and one checksum, differing only in the archive",
          "[pe][uki]") {
  Bytes uki = make_uki("talos.platform=metal", filler(5001, 3));
  std::string first = "070701" + std::string(1500, 'a');
  std::string second = "070701" + std::string(1530, 'b');  // longer, and other bytes
  Bytes a = append_to_uki_initrd(uki, first);
  Bytes b = append_to_uki_initrd(uki, second);
  REQUIRE(a.size() == b.size());
  PeLayout la = parse_pe(a);
  CHECK(la.checksum == pe_checksum(a));
  CHECK(parse_pe(b).checksum == pe_checksum(b));
  CHECK(la.checksum == parse_pe(b).checksum);
  CHECK(la.checksum == 0xffff + a.size());
  // Every byte before the archive is the same: headers, every section before it, the original initrd.
  const PeSection& initrd = find(la, ".initrd");
  std::size_t archive = initrd.raw_offset + (5001 + 3) / 4 * 4;
  auto differs = std::mismatch(a.begin(), a.end(), b.begin());
  CHECK(static_cast<std::size_t>(differs.first - a.begin()) == archive + 6);
  // The loaded section is the original, the archive and zeros; the balancing word lies past it.
  Bytes loaded = section(a, ".initrd");
  CHECK(loaded.size() == initrd.virtual_size);
  CHECK(std::string(loaded.begin() + static_cast<std::ptrdiff_t>(archive - initrd.raw_offset),
                    loaded.begin() + static_cast<std::ptrdiff_t>(archive - initrd.raw_offset + first.size())) == first);
  CHECK(std::all_of(loaded.begin() + static_cast<std::ptrdiff_t>(archive - initrd.raw_offset + first.size()), loaded.end(),
                    [](std::uint8_t x) { return x == 0; }));
  CHECK(initrd.raw_size == initrd.virtual_size + 4);
  // Another 4 KiB of archive: another size.
  CHECK(append_to_uki_initrd(uki, "070701" + std::string(5000, 'c')).size() == a.size() + 4096);
}

TEST_CASE("pe: balancing the checksum needs a zero even word outside CheckSum and a valid CheckSum", "[talos][pe]") {
  Bytes uki = make_uki("a", filler(3000, 3));
  uki.resize(uki.size() + 4, 0);  // room past the last section, as a balanced UKI has past VirtualSize
  std::size_t word = uki.size() - 2;
  // make_uki's CheckSum is not necessarily valid: set it as replace_pe_section leaves it.
  Bytes valid = uki;
  for (int i = 0; i < 4; ++i) valid[optional_offset + 64 + static_cast<std::size_t>(i)] = 0;
  std::uint32_t sum = pe_checksum(valid);
  for (int i = 0; i < 4; ++i) valid[optional_offset + 64 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sum >> (8 * i));
  Bytes balanced = valid;
  balance_pe_checksum(balanced, word);
  CHECK(parse_pe(balanced).checksum == pe_checksum(balanced));
  CHECK(parse_pe(balanced).checksum == 0xffff + balanced.size());
  CHECK_THROWS_WITH(balance_pe_checksum(valid, word - 1), Catch::Contains("not an even word"));
  CHECK_THROWS_WITH(balance_pe_checksum(valid, optional_offset + 64), Catch::Contains("not an even word"));
  CHECK_THROWS_WITH(balance_pe_checksum(balanced, word), Catch::Contains("the word there is not zero"));
}

TEST_CASE("uki: another archive's UKI is the edited one with its slot and balancing word rewritten", "[pe][uki]") {
  for (std::size_t initrd_size : {std::size_t{5001}, std::size_t{8192}, std::size_t{4093}}) {
    Bytes base = make_uki("talos.platform=metal", filler(initrd_size, 3));
    std::string first = "070701" + std::string(1500, 'a');
    auto slot = uki_append_slot(base, first.size());
    REQUIRE(slot);
    Bytes edited = append_to_uki_initrd(base, first);
    CHECK(edited.size() == slot->image_size);
    CHECK(std::string(edited.begin() + static_cast<std::ptrdiff_t>(slot->archive_offset),
                      edited.begin() + static_cast<std::ptrdiff_t>(slot->archive_offset + first.size())) == first);
    // Archives of other lengths and bytes in the same 4 KiB, each worked out from the previous one.
    Bytes previous = edited;
    for (const std::string& next : {"070701" + std::string(1530, 'b'), std::string("070701"), "070701" + std::string(1000, '\xff'),
                                    "070701" + std::string(slot->length - 6, '\x01')}) {
      INFO(initrd_size << " " << next.size());
      REQUIRE(uki_append_slot(base, next.size()) == slot);
      std::span<const std::uint8_t> region(previous.data() + slot->archive_offset, slot->length);
      std::span<const std::uint8_t, 2> balance(previous.data() + slot->balance_offset, 2);
      UkiSlotBytes bytes = uki_slot_bytes(*slot, region, balance, next);
      Bytes patched = previous;
      std::copy(bytes.region.begin(), bytes.region.end(), patched.begin() + static_cast<std::ptrdiff_t>(slot->archive_offset));
      std::copy(bytes.balance.begin(), bytes.balance.end(), patched.begin() + static_cast<std::ptrdiff_t>(slot->balance_offset));
      CHECK(patched == append_to_uki_initrd(base, next));
      CHECK(parse_pe(patched).checksum == pe_checksum(patched));
      previous = patched;
    }
    // One byte more than the slot holds: another layout.
    CHECK(uki_append_slot(base, slot->length + 1) != slot);
    CHECK_THROWS_WITH(uki_slot_bytes(*slot, std::span<const std::uint8_t>(edited.data() + slot->archive_offset, slot->length),
                                     std::span<const std::uint8_t, 2>(edited.data() + slot->balance_offset, 2),
                                     std::string(slot->length + 1, 'x')),
                      Catch::Contains("does not fit the slot"));
  }
}
