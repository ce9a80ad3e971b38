#include "disk/chunk_range_store.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/sha256.hpp"
#include "disk/bmap.hpp"
#include "disk/image_patch.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t block = 4096;
constexpr std::uint64_t split = 1024;  // a Pi build's: 4 MiB, the hashing's chunk size
const BmapOptions options{.skip_zero_blocks = true, .range_split_blocks = split, .threads = 0};

// An archive-like file: random bytes with a run of zero blocks inside (so a chunk has two ranges).
std::string archive_bytes(std::size_t size) {
  std::string bytes(size, '\0');
  std::mt19937_64 random(7);
  for (auto& byte : bytes) byte = static_cast<char>(random());
  std::fill_n(bytes.begin() + (5 << 20), 3 * block, '\0');
  return bytes;
}

}  // namespace

TEST_CASE("chunk range store: its text round-trips, and torn, edited or foreign stores are ignored") {
  ChunkRangeEntries entries;
  const Sha256Digest a = Sha256::of(std::string("a"));
  const Sha256Digest b = Sha256::of(std::string("b"));
  entries.chunks[{0, 4 << 20}] = {BmapRange{0, 10, a}, BmapRange{14, 1023, b}};
  entries.chunks[{8192, 1000}] = {BmapRange{0, 0, b}};
  entries.chunks[{1 << 22, 4 << 20}] = {};  // all zero blocks: no ranges, still known
  const std::string text = format_chunk_ranges(entries, block, split);
  const auto parsed = parse_chunk_ranges(text, block, split, "store");
  REQUIRE(parsed);
  CHECK(parsed->chunks == entries.chunks);

  CHECK_FALSE(parse_chunk_ranges(text, 512, split, "store"));          // made for another block size
  CHECK_FALSE(parse_chunk_ranges(text, block, 256, "store"));          // or split
  CHECK_FALSE(parse_chunk_ranges(text.substr(0, text.size() / 2), block, split, "store"));  // torn
  CHECK_FALSE(parse_chunk_ranges(text.substr(0, text.size() - 1), block, split, "store"));  // end line cut
  std::string edited = text;
  edited[edited.find(" 10 ") + 1] = '9';
  CHECK_FALSE(parse_chunk_ranges(edited, block, split, "store"));
  CHECK_FALSE(parse_chunk_ranges("", block, split, "store"));
}

// What a Pi build does with its archives: the image's bmap, with the archive chunks' ranges taken
// from the store the previous build left, equals the bmap hashed from every byte.
TEST_CASE("chunk range store: copied chunks' ranges come from the store and give the same bmap and sha256") {
  test::TempDir dir;
  const std::string archive = archive_bytes((9 << 20) + 1234);  // ends in a partial block: zeros after it
  test::write_file(dir / "archive", archive);
  const std::string key = Sha256::of(archive).hex();
  // The image: 1 MiB of other data, then the archive in two runs (as a fragmented file is placed):
  // its first 6 MiB at 6 MiB, the rest at 12 MiB (that run 5 MiB long: zeros after the file's end),
  // then zeros to 24 MiB.
  std::string image(24 << 20, '\0');
  std::fill_n(image.begin() + (1 << 20), 1 << 20, 'x');
  const std::uint64_t first_run = 6 << 20;
  image.replace(6 << 20, first_run, archive.substr(0, first_run));
  image.replace(12 << 20, archive.size() - first_run, archive.substr(first_run));
  test::write_file(dir / "image.img", image);
  CopiedFiles copied{{dir / "archive"}, {{6 << 20, first_run, 0, 0}, {12 << 20, (5 << 20), 0, first_run}}, {}};

  const Bmap expected = create_bmap(dir / "image.img", options);
  const ImageHashes expected_hashes = hash_image(dir / "image.img", true, options);
  const fs::path store = dir / "cache";
  {
    CopiedChunkRanges cold(store, copied, {key}, block, split);
    CHECK(create_bmap(dir / "image.img", options, copied, &cold) == expected);
    CHECK(cold.found_bytes() == 0);
    cold.save();
  }
  REQUIRE(fs::exists(store / (key + ".b4096.s1024")));

  CopiedChunkRanges warm(store, copied, {key}, block, split);
  const ImagePatch nothing;
  const ImageHashes hashes = hash_patched_image(dir / "image.img", nothing, "image.img", true, options, &copied, &warm);
  CHECK(hashes.bmap == expected);
  CHECK(hashes.sha256 == expected_hashes.sha256);
  // The chunks wholly inside one run: [8, 12) MiB and [12, 16) MiB; the others are hashed.
  CHECK(warm.found_bytes() == (8u << 20));

  // A chunk a patch writes into is hashed from its patched bytes, never answered from the store.
  test::write_file(dir / "patched.img", image);
  ImagePatch patch;
  patch.write(13 << 20, std::vector<std::uint8_t>(100, 0xAB));
  {
    auto bytes = test::read_file(dir / "patched.img");
    std::fill_n(bytes.begin() + (13 << 20), 100, static_cast<char>(0xAB));
    test::write_file(dir / "patched.img", bytes);
  }
  CopiedChunkRanges again(store, copied, {key}, block, split);
  const ImageHashes patched = hash_patched_image(dir / "image.img", patch, "image.img", true, options, &copied, &again);
  CHECK(patched.bmap == create_bmap(dir / "patched.img", options));
  CHECK(again.found_bytes() == (4u << 20));

  // Another key (another archive's content), or none, finds nothing.
  CopiedChunkRanges other(store, copied, {Sha256::of(std::string("other")).hex()}, block, split);
  CHECK(create_bmap(dir / "image.img", options, copied, &other) == expected);
  CHECK(other.found_bytes() == 0);
  CopiedChunkRanges unknown(store, copied, {""}, block, split);
  CHECK(create_bmap(dir / "image.img", options, copied, &unknown) == expected);
  CHECK(unknown.found_bytes() == 0);
  // A store for another split size is not asked.
  CopiedChunkRanges wrong_split(store, copied, {key}, block, 256);
  CHECK(create_bmap(dir / "image.img", options, copied, &wrong_split) == expected);
  CHECK(wrong_split.found_bytes() == 0);

  // A bmap alone does not read the chunks the store answers for by where they were copied from: the
  // 8 MiB it finds are 7 MiB fewer bytes read (this process's read() bytes, /proc/self/io; the
  // second chunk runs past the archive's end, whose zeros are not read from it anyway).
  auto bytes_read = [] {
    std::ifstream io("/proc/self/io");
    std::string field;
    std::uint64_t value = 0;
    while (io >> field >> value) {
      if (field == "rchar:") return value;
    }
    return std::uint64_t{0};
  };
  std::uint64_t before = bytes_read();
  CHECK(create_bmap(dir / "image.img", options, copied, nullptr) == expected);
  const std::uint64_t read_all = bytes_read() - before;
  CopiedChunkRanges counted(store, copied, {key}, block, split);
  before = bytes_read();
  CHECK(create_bmap(dir / "image.img", options, copied, &counted) == expected);
  const std::uint64_t read_some = bytes_read() - before;
  CHECK(counted.found_bytes() == (8u << 20));
  CHECK(read_all >= read_some + (7u << 20));
  CHECK(read_all <= read_some + (8u << 20));
}

// A range that ends its file's bytes early (a tar member's last block: zeros, not the next member)
// is not the file's bytes at that location in the chunk holding the zeros: a store entry made for
// those bytes (another build, the whole file) must not answer for it.
TEST_CASE("chunk range store: a chunk holding a range's zeroed tail is hashed, not taken from the store") {
  test::TempDir dir;
  const std::string archive = archive_bytes(16 << 20);
  test::write_file(dir / "archive", archive);
  const std::string key = Sha256::of(archive).hex();
  const fs::path store = dir / "cache";
  // The whole file copied at 4 MiB: every chunk's ranges go into the store.
  {
    std::string image(24 << 20, '\0');
    image.replace(4 << 20, 16 << 20, archive);
    test::write_file(dir / "whole.img", image);
    CopiedFiles whole{{dir / "archive"}, {{4 << 20, 16 << 20, 0, 0}}, {}};
    CopiedChunkRanges cold(store, whole, {key}, block, split);
    CHECK(create_bmap(dir / "whole.img", options, whole, &cold) == create_bmap(dir / "whole.img", options));
    cold.save();
  }
  // Now 8 MiB of it at 4 MiB, of which only the first 6 MiB are the file's: [8, 12) MiB is zeros
  // after 10 MiB.
  std::string image(24 << 20, '\0');
  image.replace(4 << 20, 6 << 20, archive.substr(0, 6 << 20));
  test::write_file(dir / "tail.img", image);
  CopiedRange range{4 << 20, 8 << 20, 0, 0};
  range.data_length = 6 << 20;
  CopiedFiles tail{{dir / "archive"}, {range}, {}};
  CopiedChunkRanges warm(store, tail, {key}, block, split);
  const ImageHashes expected = hash_image(dir / "tail.img", true, options);
  const ImagePatch nothing;
  // Read through the range (the image's own bytes there could still be anything).
  image.replace(4 << 20, 8 << 20, std::string(8 << 20, 'u'));
  test::write_file(dir / "unwritten.img", image);
  const ImageHashes hashes = hash_patched_image(dir / "unwritten.img", nothing, "unwritten.img", true, options, &tail, &warm);
  CHECK(hashes.sha256 == expected.sha256);
  CHECK(hashes.bmap == expected.bmap);
  CHECK(warm.found_bytes() == (4u << 20));  // [4, 8) MiB only
}

TEST_CASE("chunk range store: a damaged store is ignored and written again") {
  test::TempDir dir;
  const std::string archive = archive_bytes(8 << 20);
  test::write_file(dir / "archive", archive);
  const std::string key = Sha256::of(archive).hex();
  test::write_file(dir / "image.img", archive);
  CopiedFiles copied{{dir / "archive"}, {{0, 8 << 20, 0, 0}}, {}};
  const Bmap expected = create_bmap(dir / "image.img", options);
  const fs::path store = dir / "cache";
  fs::create_directories(store);
  test::write_file(store / (key + ".b4096.s1024"), "aggrik8s-image chunk ranges 1 block_size=4096 split_blocks=1024\nchunk 0 4194304 1\n0 1023 ");
  {
    CopiedChunkRanges damaged(store, copied, {key}, block, split);
    CHECK(create_bmap(dir / "image.img", options, copied, &damaged) == expected);
    CHECK(damaged.found_bytes() == 0);
    damaged.save();
  }
  CopiedChunkRanges repaired(store, copied, {key}, block, split);
  CHECK(create_bmap(dir / "image.img", options, copied, &repaired) == expected);
  CHECK(repaired.found_bytes() == (8u << 20));
  // Nothing but the store is left in the directory (no temporary files).
  CHECK(std::distance(fs::directory_iterator(store), fs::directory_iterator()) == 1);
}

// What a Pi build does with its base where the filesystem cannot reflink: the prepared image is a
// plain copy of the base, then edited by tools that do not say where (e2fsck, resize2fs). Its chunks
// that still hold the base's bytes get their ranges from the store kept under the base's key; an
// edited chunk is hashed, even when the edit leaves the chunk's ranges looking alike (only its bytes
// differ), and never stored under the base's key.
TEST_CASE("chunk range store: chunks equal to a compared file's bytes come from its store, edited ones are hashed") {
  test::TempDir dir;
  const std::string base = archive_bytes((12 << 20) + 8192);  // three whole chunks and a short one
  test::write_file(dir / "base.img", base);
  const std::string key = Sha256::of("decompressed " + Sha256::of(base).hex()).hex();
  // The image: the base grown to 20 MiB (zeros after it), one byte edited in the chunk at 4 MiB,
  // the base's last 8 KiB followed by new data in its short last chunk, and an archive copied into
  // its last 4 MiB (as a build's are: the compared file comes after the copied ones).
  std::string image = base;
  image.resize(20 << 20, '\0');
  image[(4 << 20) + 4096 * 7 + 3] ^= 0x5A;
  std::fill_n(image.begin() + (12 << 20) + 8192, 4096, 'n');
  std::string archive = test::random_bytes(4 << 20, 11);
  std::fill_n(archive.begin() + (1 << 20), 2 * block, '\0');
  test::write_file(dir / "archive", archive);
  image.replace(16 << 20, archive.size(), archive);
  test::write_file(dir / "image.img", image);
  const CopiedFiles none;
  const CopiedFiles copied{{dir / "archive"}, {{16 << 20, 4 << 20, 0, 0}}, {}};
  const std::string archive_key = Sha256::of(archive).hex();

  const Bmap expected = create_bmap(dir / "image.img", options);
  const fs::path store = dir / "cache";
  {
    CopiedChunkRanges cold(store, copied, {archive_key}, block, split);
    cold.compare_with(dir / "base.img", key);
    CHECK(create_bmap(dir / "image.img", options, copied, &cold) == expected);
    CHECK(cold.found_bytes() == 0);
    cold.save();
  }
  REQUIRE(fs::exists(store / (key + ".b4096.s1024")));
  REQUIRE(fs::exists(store / (archive_key + ".b4096.s1024")));
  CopiedChunkRanges warm(store, copied, {archive_key}, block, split);
  warm.compare_with(dir / "base.img", key);
  const ImageHashes hashes = hash_patched_image(dir / "image.img", ImagePatch{}, "image.img", true, options, &copied, &warm);
  CHECK(hashes.bmap == expected);
  CHECK(hashes.sha256 == hash_image(dir / "image.img", true, options).sha256);
  // [0, 4) and [8, 12) MiB from the base's store, [16, 20) from the archive's; not the edited chunk,
  // not the one past the base's end.
  CHECK(warm.found_bytes() == (12u << 20));

  // The store knows the base's chunk at 4 MiB now only if an image held it unedited: the cold
  // build's edited chunk was not kept under the base's key. An image equal to the base gets every
  // chunk the cold build saw unedited from the store, and hashes the one it did not.
  test::write_file(dir / "same.img", base);
  CopiedChunkRanges same(store, none, {}, block, split);
  same.compare_with(dir / "base.img", key);
  CHECK(create_bmap(dir / "same.img", options, none, &same) == create_bmap(dir / "same.img", options));
  CHECK(same.found_bytes() == (8u << 20));

  // Without a key (a base whose content is not known by a digest), nothing is compared or stored.
  const auto stores = std::distance(fs::directory_iterator(store), fs::directory_iterator());
  CopiedChunkRanges unnamed(store, none, {}, block, split);
  unnamed.compare_with(dir / "base.img", "");
  CHECK(create_bmap(dir / "image.img", options, none, &unnamed) == expected);
  CHECK(unnamed.found_bytes() == 0);
  unnamed.save();
  CHECK(std::distance(fs::directory_iterator(store), fs::directory_iterator()) == stores);
  // One file is compared at a time.
  CHECK_THROWS_WITH(warm.compare_with(dir / "same.img", key), Catch::Contains("base.img"));
  CHECK_THROWS_WITH(CopiedChunkRanges(store, none, {}, block, split).compare_with(dir / "missing.img", key),
                    Catch::Contains("missing.img"));
}
