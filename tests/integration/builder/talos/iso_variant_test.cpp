// ISO variants (builder/talos/iso_variant.hpp) against libisofs itself: a variant of one config ISO
// with another config must be byte for byte the ISO libisofs writes for that config from scratch
// (ISO 9660 + Rock Ridge + Joliet records patched), or be refused when the layout would change.
#include <catch2/catch.hpp>
#include <filesystem>
#include <sys/stat.h>

#include "builder/talos/iso_variant.hpp"
#include "builder/talos/read_only_file_mapping.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> bytes_of_file(const fs::path& path) {
  std::string s = test::read_file(path);
  return {s.begin(), s.end()};
}

std::span<const std::uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string config_of_size(std::size_t size, char fill) {
  std::string yaml = "version: v1alpha1\n# ";
  yaml.resize(size - 1, fill);
  return yaml + "\n";
}

}  // namespace

TEST_CASE("iso variant: a config ISO patched with another config is libisofs' own ISO for it", "[talos][iso][variant]") {
  test::TempDir dir;
  const ConfigIsoOptions options{"metal-iso", 1767225600};
  // 3000 and 2500 bytes: both two blocks, so libisofs lays both images out alike.
  std::string first = config_of_size(3000, 'a');
  std::string second = config_of_size(2500, 'b');
  write_config_iso(dir / "first.iso", first, options);
  write_config_iso(dir / "second.iso", second, options);
  std::vector<std::uint8_t> template_bytes = bytes_of_file(dir / "first.iso");
  REQUIRE(template_bytes.size() == fs::file_size(dir / "second.iso"));

  std::vector<IsoFilePlacement> placements = locate_iso_files(template_bytes, {"config.yaml"});
  REQUIRE(placements.size() == 1);
  CHECK(placements[0].size == first.size());
  CHECK(placements[0].data_offset % 2048 == 0);
  // The ISO 9660 record and the Joliet record.
  CHECK(placements[0].record_offsets.size() == 2);

  auto patches = plan_iso_variant(template_bytes.size(), placements, {{"config.yaml", bytes_of(second)}}, {});
  REQUIRE(patches);
  Sha256Digest digest = write_iso_variant(dir / "first.iso", template_bytes, *patches, dir / "variant.iso", 0600);
  CHECK(test::read_file(dir / "variant.iso") == test::read_file(dir / "second.iso"));
  CHECK(digest == Sha256::of_file(dir / "second.iso"));
  struct stat st {};
  REQUIRE(::stat((dir / "variant.iso").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);

  // Read back by the tools: xorriso lists the file with its new size, libarchive reads the new text.
  auto listing = test::run("xorriso -indev '" + (dir / "variant.iso").string() + "' -find / -type f -exec lsdl 2>/dev/null");
  INFO(listing.output);
  CHECK(listing.output.find(" 2500 ") != std::string::npos);
  CHECK(read_iso_text_file(dir / "variant.iso", "config.yaml") == second);
}

TEST_CASE("iso variant: a file needing another block count is refused, bad requests are errors", "[talos][iso][variant]") {
  test::TempDir dir;
  write_config_iso(dir / "t.iso", config_of_size(3000, 'a'), {"metal-iso", 1767225600});
  std::vector<std::uint8_t> image = bytes_of_file(dir / "t.iso");
  std::vector<IsoFilePlacement> placements = locate_iso_files(image, {"config.yaml"});  // the Rock Ridge name
  REQUIRE(placements.size() == 1);

  std::string three_blocks = config_of_size(5000, 'c');
  std::string one_block = config_of_size(100, 'c');
  CHECK_FALSE(plan_iso_variant(image.size(), placements, {{"config.yaml", bytes_of(three_blocks)}}, {}));
  CHECK_FALSE(plan_iso_variant(image.size(), placements, {{"config.yaml", bytes_of(one_block)}}, {}));
  CHECK_FALSE(plan_iso_variant(image.size(), placements, {{"config.yaml", {}}}, {}));

  CHECK_THROWS_WITH(locate_iso_files(image, {"boot/grub/grub.cfg"}), Catch::Contains("no /boot/grub/grub.cfg"));
  CHECK_THROWS_WITH(plan_iso_variant(image.size(), placements, {{"other.yaml", bytes_of(one_block)}}, {}),
                    Catch::Contains("/other.yaml was not located"));
  std::vector<std::uint8_t> region(4096, 1);
  CHECK_THROWS_WITH(plan_iso_variant(image.size(), placements, {}, {{image.size() - 2048, region}}),
                    Catch::Contains("runs past the image's end"));
  CHECK_THROWS_WITH(plan_iso_variant(image.size(), placements, {}, {{0, region}, {2048, region}}), Catch::Contains("overlap"));
  std::vector<std::uint8_t> not_iso(64 * 1024, 0);
  CHECK_THROWS_WITH(locate_iso_files(not_iso, {"config.yaml"}), Catch::Contains("no primary volume descriptor"));
}

TEST_CASE("iso variant: a large patch mostly equal to the template is written as the same bytes", "[talos][iso][variant]") {
  // write_iso_variant copies the runs of a patch that equal the template and writes only the rest:
  // runs that change, start or end mid-run, and a patch starting off any block boundary.
  test::TempDir dir;
  std::string template_text(300 * 1024, '\0');
  for (std::size_t i = 0; i < template_text.size(); ++i) template_text[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  test::write_file(dir / "template.bin", template_text);
  std::vector<std::uint8_t> template_bytes(template_text.begin(), template_text.end());
  const std::uint64_t offset = 1000;
  std::vector<std::uint8_t> content(template_bytes.begin() + offset, template_bytes.begin() + offset + 250'000);
  content[0] ^= 1;                                                     // in the first, partial run
  content[70'000] ^= 0xff;                                             // one byte in a middle run
  for (std::size_t i = 200'000; i < 200'010; ++i) content[i] = 0;      // a few bytes later on
  content.back() ^= 2;                                                 // the last, partial run
  std::vector<IsoBytePatch> patches;
  patches.push_back({offset, content, {}});
  patches.push_back({290 * 1024, {}, std::vector<std::uint8_t>(100, 0x5a)});  // a small one after it
  Sha256Digest digest = write_iso_variant(dir / "template.bin", template_bytes, patches, dir / "out.bin", 0600);

  std::string expected = template_text;
  std::copy(content.begin(), content.end(), expected.begin() + offset);
  std::fill_n(expected.begin() + 290 * 1024, 100, '\x5a');
  CHECK(test::read_file(dir / "out.bin") == expected);
  CHECK(digest == Sha256::of_file(dir / "out.bin"));
  // The digest is taken from memory on a second thread: the same as hashing the written file, and as
  // hash_iso_variant alone.
  CHECK(hash_iso_variant(template_bytes, patches) == digest);
  CHECK(hash_iso_variant(template_bytes, {}) == Sha256::of(std::span<const std::uint8_t>(template_bytes)));
  // Mapped rather than read, the template gives the same output.
  ReadOnlyFileMapping mapped(dir / "template.bin");
  REQUIRE(mapped.size() == template_bytes.size());
  CHECK(std::equal(mapped.bytes().begin(), mapped.bytes().end(), template_bytes.begin()));
  CHECK(write_iso_variant(dir / "template.bin", mapped.bytes(), patches, dir / "out2.bin", 0600) == digest);
  CHECK(test::read_file(dir / "out2.bin") == expected);
  // Copied from the mapping's own file: the bytes it was mapped from, even once its path is removed
  // and another file put there (a cache's template pruned or replaced by another build).
  fs::remove(dir / "template.bin");
  test::write_file(dir / "template.bin", std::string(template_text.size(), 'x'));
  copy_iso_variant(mapped.fd(), mapped.bytes(), patches, dir / "out3.bin", 0600);
  CHECK(test::read_file(dir / "out3.bin") == expected);
  fs::remove(dir / "template.bin");
  copy_iso_variant(mapped.fd(), mapped.bytes(), {}, dir / "out4.bin", 0600);
  CHECK(test::read_file(dir / "out4.bin") == template_text);
}

TEST_CASE("iso variant: patches out of order are refused by the hash, a mapping names its file", "[talos][iso][variant]") {
  std::vector<std::uint8_t> image(4096, 7);
  std::vector<IsoBytePatch> patches;
  patches.push_back({2000, {}, std::vector<std::uint8_t>(10, 1)});
  patches.push_back({1000, {}, std::vector<std::uint8_t>(10, 2)});
  CHECK_THROWS_WITH(hash_iso_variant(image, patches), Catch::Contains("out of order"));
  patches = {{4090, {}, std::vector<std::uint8_t>(10, 1)}};
  CHECK_THROWS_WITH(hash_iso_variant(image, patches), Catch::Contains("past the image"));
  test::TempDir dir;
  CHECK_THROWS_WITH(ReadOnlyFileMapping(dir / "missing.iso"), Catch::Contains("missing.iso"));
  test::write_file(dir / "empty.iso", "");
  CHECK(ReadOnlyFileMapping(dir / "empty.iso").bytes().empty());
}
