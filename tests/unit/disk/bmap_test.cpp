#include "disk/bmap.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;

namespace {

// A 1 MiB + 100 byte sparse file: 8 KiB of data at block 16, an explicitly written zero block 32
// (allocated, yet all zero), one data block 33, and a short last block.
std::filesystem::path make_small_sparse_image(const test::TempDir& dir) {
  auto path = dir / "small.img";
  {
    std::ofstream create(path, std::ios::binary);
  }
  std::filesystem::resize_file(path, (1 << 20) + 100);
  std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
  file.seekp(16 * 4096);
  file << std::string(8192, 'a');
  file.seekp(32 * 4096);
  file << std::string(4096, '\0') << std::string(4096, 'b');
  file.seekp((1 << 20) + 50);
  file << std::string(50, 'c');
  return path;
}

std::string checksum_field(const std::string& xml) {
  auto begin = xml.find("<BmapFileChecksum> ") + 19;
  return xml.substr(begin, 64);
}

}  // namespace

TEST_CASE("bmap: ranges skip holes and all-zero blocks and hash their bytes") {
  test::TempDir dir;
  auto image = make_small_sparse_image(dir);
  Bmap bmap = create_bmap(image);
  CHECK(bmap.image_size == (1 << 20) + 100);
  CHECK(bmap.block_size == 4096);
  CHECK(bmap.blocks_count() == 257);
  REQUIRE(bmap.ranges.size() == 3);
  CHECK(bmap.ranges[0].first_block == 16);
  CHECK(bmap.ranges[0].last_block == 17);
  CHECK(bmap.ranges[0].sha256 == Sha256::of(std::string(8192, 'a')));
  CHECK(bmap.ranges[1].first_block == 33);
  CHECK(bmap.ranges[1].last_block == 33);
  CHECK(bmap.ranges[1].sha256 == Sha256::of(std::string(4096, 'b')));
  // The last block is 100 bytes long and hashed as such, as bmaptool reads it.
  CHECK(bmap.ranges[2].first_block == 256);
  CHECK(bmap.ranges[2].sha256 == Sha256::of(std::string(50, '\0') + std::string(50, 'c')));
  CHECK(bmap.mapped_blocks_count() == 4);

  BmapOptions one_thread;
  one_thread.threads = 1;
  CHECK(create_bmap(image, one_thread) == bmap);
}

TEST_CASE("bmap: XML has bmaptool's layout and a self-excluding file checksum") {
  test::TempDir dir;
  Bmap bmap = create_bmap(make_small_sparse_image(dir));
  std::string xml = format_bmap(bmap);
  CHECK(xml.starts_with("<?xml version=\"1.0\" ?>\n<!-- This file contains the block map"));
  CHECK(xml.find("<bmap version=\"2.0\">\n    <!-- Image size in bytes: 1.0 MiB -->\n"
                 "    <ImageSize> 1048676 </ImageSize>\n") != std::string::npos);
  CHECK(xml.find("    <BlockSize> 4096 </BlockSize>\n") != std::string::npos);
  CHECK(xml.find("    <BlocksCount> 257 </BlocksCount>\n") != std::string::npos);
  // bmaptool reserves room for the largest count and the image size's text, then overwrites it.
  CHECK(xml.find("    <!-- Count of mapped blocks: 16.0 KiB or 1.6%    -->\n") != std::string::npos);
  CHECK(xml.find("    <MappedBlocksCount> 4   </MappedBlocksCount>\n") != std::string::npos);
  CHECK(xml.find("    <ChecksumType> sha256 </ChecksumType>\n") != std::string::npos);
  CHECK(xml.find("        <Range chksum=\"" + bmap.ranges[0].sha256->hex() + "\"> 16-17 </Range>\n") !=
        std::string::npos);
  CHECK(xml.find("\"> 33 </Range>\n") != std::string::npos);
  CHECK(xml.ends_with("    </BlockMap>\n</bmap>\n"));

  std::string stated = checksum_field(xml);
  std::string zeroed = xml;
  zeroed.replace(zeroed.find(stated), 64, std::string(64, '0'));
  CHECK(Sha256::of(zeroed).hex() == stated);
  CHECK(format_bmap(bmap) == xml);
}

TEST_CASE("bmap: parser round trip") {
  test::TempDir dir;
  Bmap bmap = create_bmap(make_small_sparse_image(dir));
  CHECK(parse_bmap(format_bmap(bmap), "x.bmap") == bmap);

  write_bmap_file(bmap, dir / "x.bmap");
  CHECK(read_bmap_file(dir / "x.bmap") == bmap);
  CHECK_FALSE(std::filesystem::exists(dir / "x.bmap.partial"));

  // Ranges without checksums (bmaptool create --no-checksum) are valid too.
  Bmap unchecked;
  unchecked.image_size = 10 * 4096;
  unchecked.ranges = {BmapRange{0, 0, std::nullopt}, BmapRange{3, 9, std::nullopt}};
  std::string xml = format_bmap(unchecked);
  CHECK(xml.find("<Range> 3-9 </Range>") != std::string::npos);
  CHECK(parse_bmap(xml, "u.bmap") == unchecked);
}

TEST_CASE("bmap: parser rejects a wrong BmapFileChecksum and inconsistent content") {
  test::TempDir dir;
  Bmap bmap = create_bmap(make_small_sparse_image(dir));
  std::string xml = format_bmap(bmap);

  std::string wrong_checksum = xml;
  auto at = wrong_checksum.find("<BmapFileChecksum> ") + 19;
  wrong_checksum[at] = wrong_checksum[at] == 'a' ? 'b' : 'a';
  CHECK_THROWS_WITH(parse_bmap(wrong_checksum, "bad.bmap"),
                    Catch::Contains("bad.bmap") && Catch::Contains("checksum mismatch"));

  // A changed range is caught by the file checksum, before anyone trusts the range.
  std::string moved_range = xml;
  moved_range.replace(moved_range.find("> 33 </Range>"), 13, "> 34 </Range>");
  CHECK_THROWS_WITH(parse_bmap(moved_range, "moved.bmap"), Catch::Contains("checksum mismatch"));

  CHECK_THROWS_WITH(parse_bmap("<bmap version=\"2.0\"><ImageSize>", "cut.bmap"),
                    Catch::Contains("cut.bmap") && Catch::Contains("not a valid bmap"));
  std::string old_version = xml;
  old_version.replace(old_version.find("version=\"2.0\""), 13, "version=\"1.3\"");
  CHECK_THROWS_WITH(parse_bmap(old_version, "old.bmap"), Catch::Contains("version 1.3 is not supported"));
}

TEST_CASE("bmap: an empty image has no bmap") {
  test::TempDir dir;
  test::write_file(dir / "empty.img", "");
  CHECK_THROWS_WITH(create_bmap(dir / "empty.img"), Catch::Contains("empty.img"));
}

namespace {

// 40 MiB + 1000 bytes: a 36 MiB data run (more chunks than the hasher keeps in flight) with zero
// blocks written inside it, a hole, a short data run, and a hole up to a short last block.
std::filesystem::path make_large_sparse_image(const test::TempDir& dir) {
  auto path = dir / "large.img";
  {
    std::ofstream create(path, std::ios::binary);
  }
  std::filesystem::resize_file(path, (40 << 20) + 1000);
  std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
  std::string run(36 << 20, '\0');
  std::uint32_t state = 12345;
  for (std::size_t i = 0; i < run.size(); ++i) {
    state = state * 1103515245 + 12345;
    run[i] = static_cast<char>(state >> 24);
  }
  for (std::size_t block : {3u, 1024u, 1025u, 5000u}) std::fill_n(run.begin() + static_cast<std::ptrdiff_t>(block * 4096), 4096, '\0');
  file.seekp(4096);
  file.write(run.data(), static_cast<std::streamsize>(run.size()));
  file.seekp(38 << 20);
  file << std::string(3 * 4096 + 17, 'x');
  return path;
}

}  // namespace

TEST_CASE("bmap: hash_image gives the file's sha256 and create_bmap's ranges from one read") {
  test::TempDir dir;
  for (const auto& image : {make_small_sparse_image(dir), make_large_sparse_image(dir)}) {
    INFO(image.filename().string());
    const Sha256Digest expected = Sha256::of_file(image);
    ImageHashes hashes = hash_image(image, true);
    CHECK(hashes.size == std::filesystem::file_size(image));
    CHECK(hashes.sha256 == expected);
    REQUIRE(hashes.bmap);
    CHECK(*hashes.bmap == create_bmap(image));

    BmapOptions one_thread;
    one_thread.threads = 1;
    ImageHashes single = hash_image(image, true, one_thread);
    CHECK(single.sha256 == expected);
    CHECK(single.bmap == hashes.bmap);

    ImageHashes digest_only = hash_image(image, false);
    CHECK(digest_only.sha256 == expected);
    CHECK_FALSE(digest_only.bmap);

    BmapOptions keep_zero_blocks;
    keep_zero_blocks.skip_zero_blocks = false;
    CHECK(hash_image(image, true, keep_zero_blocks).bmap == create_bmap(image, keep_zero_blocks));
  }
  // The large image's zero blocks split its first data run: blocks 1..3, 5..1024, 1027..5000, ...
  Bmap large = *hash_image(dir / "large.img", true).bmap;
  REQUIRE(large.ranges.size() == 5);
  CHECK(large.ranges[0].first_block == 1);
  CHECK(large.ranges[0].last_block == 3);
  CHECK(large.ranges[1].first_block == 5);
  CHECK(large.ranges[4].first_block == (38 << 20) / 4096);
  CHECK(large.ranges[4].last_block == (38 << 20) / 4096 + 3);
}

TEST_CASE("bmap: hash_image of an empty file") {
  test::TempDir dir;
  test::write_file(dir / "empty.img", "");
  CHECK(hash_image(dir / "empty.img", false).sha256 == Sha256::of(std::string()));
  CHECK_THROWS_WITH(hash_image(dir / "empty.img", true), Catch::Contains("empty.img"));
}

TEST_CASE("bmap: ranges split into chunks, and update_bmap hashes again only the chunks an edit wrote") {
  test::TempDir dir;
  auto image = make_large_sparse_image(dir);
  BmapOptions chunked;
  chunked.range_split_blocks = 256;  // 1 MiB
  Bmap base = create_bmap(image, chunked);
  CHECK(*hash_image(image, true, chunked).bmap == base);
  CHECK(base.mapped_blocks_count() == create_bmap(image).mapped_blocks_count());
  for (const auto& range : base.ranges) CHECK(range.first_block / 256 == range.last_block / 256);
  CHECK(base.ranges.size() > create_bmap(image).ranges.size());

  // A node's image: the same file with a few writes: into data, zeros over data (a range shrinks),
  // data into a hole (a range appears), and a write across a chunk boundary.
  auto node = dir / "node.img";
  std::filesystem::copy_file(image, node);
  std::vector<DataExtent> written;
  auto write = [&](std::uint64_t offset, const std::string& bytes) {
    std::fstream file(node, std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(static_cast<std::streamoff>(offset));
    file << bytes;
    written.push_back(DataExtent{offset, bytes.size()});
  };
  write(10 * 4096 + 7, "changed");
  write(300 * 4096, std::string(4096, '\0'));
  write(30 << 20, std::string(5000, 'h'));
  write(512 * 4096 - 10, std::string(20, 'z'));
  Bmap updated = update_bmap(node, base, written, chunked);
  CHECK(updated == create_bmap(node, chunked));
  CHECK(updated != base);
  // Nothing written: the base's ranges as they are.
  CHECK(update_bmap(image, base, {}, chunked) == base);

  // What update_bmap cannot work from is refused, naming the image.
  CHECK_THROWS_WITH(update_bmap(node, create_bmap(image), written, chunked), Catch::Contains("crosses a chunk"));
  CHECK_THROWS_WITH(update_bmap(node, base, written, BmapOptions{}), Catch::Contains("node.img"));
  std::filesystem::resize_file(node, std::filesystem::file_size(node) + 4096);
  CHECK_THROWS_WITH(update_bmap(node, base, written, chunked), Catch::Contains("node.img"));
}

namespace {

// `xml` with its BmapFileChecksum recomputed, so a test can change the file and still get past the
// checksum to the check it means.
std::string with_fixed_checksum(std::string xml) {
  auto at = xml.find("<BmapFileChecksum> ") + 19;
  xml.replace(at, 64, std::string(64, '0'));
  xml.replace(at, 64, Sha256::of(xml).hex());
  return xml;
}

}  // namespace

TEST_CASE("bmap: the XML parser refuses DOCTYPE and entity declarations (no XXE, no billion laughs)") {
  test::TempDir dir;
  std::string xml = format_bmap(create_bmap(make_small_sparse_image(dir)));
  std::string header = "<?xml version=\"1.0\" ?>\n";
  REQUIRE(xml.starts_with(header));
  std::string body = xml.substr(header.size());

  std::string laughs = header +
                       "<!DOCTYPE bmap [\n <!ENTITY a \"aaaaaaaaaa\">\n <!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\n"
                       " <!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">\n]>\n" +
                       body;
  laughs.replace(laughs.find("</BlockMap>"), 0, "<Range>&c;</Range>");
  CHECK_THROWS_WITH(parse_bmap(with_fixed_checksum(laughs), "laughs.bmap"),
                    Catch::Contains("laughs.bmap: not a valid bmap file: a DOCTYPE declaration is not allowed") &&
                        Catch::Contains("(line 2,"));

  std::string external = header + "<!DOCTYPE bmap SYSTEM \"file:///etc/passwd\">\n" + body;
  CHECK_THROWS_WITH(parse_bmap(with_fixed_checksum(external), "xxe.bmap"),
                    Catch::Contains("xxe.bmap: not a valid bmap file: a DOCTYPE declaration is not allowed"));

  // The predefined entities and character references are plain XML and still work.
  std::string referenced = xml;
  referenced.replace(referenced.find("<ChecksumType> sha256 </ChecksumType>"), 37,
                     "<ChecksumType> &#115;ha256 </ChecksumType>");
  CHECK(parse_bmap(with_fixed_checksum(referenced), "ref.bmap") == parse_bmap(xml, "x.bmap"));
}

TEST_CASE("bmap: errors name the file and the line of the bad element") {
  test::TempDir dir;
  std::string xml = format_bmap(create_bmap(make_small_sparse_image(dir)));
  std::string bad_range = xml;
  bad_range.replace(bad_range.find("> 33 </Range>"), 13, "> 3x </Range>");
  auto line = 1 + std::count(xml.begin(), xml.begin() + static_cast<std::ptrdiff_t>(xml.find("> 33 </Range>")), '\n');
  CHECK_THROWS_WITH(parse_bmap(with_fixed_checksum(bad_range), "range.bmap"),
                    Catch::Contains("range.bmap: bad block range '3x' (line " + std::to_string(line) + ")"));

  CHECK_THROWS_WITH(parse_bmap("<bmap version=\"2.0\">\n<ImageSize>\n</bmap>", "mismatch.bmap"),
                    Catch::Contains("mismatch.bmap: not a valid bmap file: mismatched tag (line 3,"));

  // The checksum must stand in the file as text: spelled with character references it cannot be
  // zeroed the way bmaptool zeroes it.
  std::string spelled = xml;
  auto at = spelled.find("<BmapFileChecksum> ") + 19;
  spelled.replace(at, 1, "&#" + std::to_string(static_cast<int>(spelled[at])) + ";");
  CHECK_THROWS_WITH(parse_bmap(spelled, "spelled.bmap"),
                    Catch::Contains("spelled.bmap: <BmapFileChecksum> must hold its 64 hex digits as plain text"));
}

TEST_CASE("bmap: an image size near 2^64 does not wrap the block count") {
  Bmap bmap;
  bmap.image_size = ~std::uint64_t{0};
  CHECK(bmap.blocks_count() == (~std::uint64_t{0}) / 4096 + 1);
  // Before, (image_size + block_size - 1) wrapped to 4094 and the count was 0, so a .bmap claiming
  // this size with <BlocksCount> 0 passed the consistency check.
  std::string xml = format_bmap(bmap);
  xml.replace(xml.find("    <BlocksCount> ") + 18, std::to_string(bmap.blocks_count()).size(), "0");
  CHECK_THROWS_WITH(parse_bmap(with_fixed_checksum(xml), "huge.bmap"), Catch::Contains("inconsistent bmap"));
}
