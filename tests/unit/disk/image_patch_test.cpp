#include "disk/image_patch.hpp"

#include <fcntl.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "disk/bmap.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

std::span<const std::uint8_t> bytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// What the patch makes of `base`: base's bytes with every write applied, in order, to a plain buffer.
std::string patched(const ImagePatch& patch, std::string base) {
  patch.apply(0, {reinterpret_cast<std::uint8_t*>(base.data()), base.size()});
  return base;
}

// 12 MiB + 300 bytes: three 3 MiB runs of pseudo-random data with holes between them, and an
// allocated zero block at 4 MiB.
fs::path make_base_image(const test::TempDir& dir) {
  auto path = dir / "prepared.img";
  { std::ofstream create(path, std::ios::binary); }
  fs::resize_file(path, (12 << 20) + 300);
  std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
  std::string run(3 << 20, '\0');
  std::uint32_t state = 99;
  for (auto& c : run) {
    state = state * 1103515245 + 12345;
    c = static_cast<char>(state >> 24);
  }
  for (std::uint64_t at : {4096ull, 9ull << 19, 17ull << 19}) {  // 4 KiB, 4.5 MiB, 8.5 MiB
    file.seekp(static_cast<std::streamoff>(at));
    file.write(run.data(), static_cast<std::streamsize>(run.size()));
  }
  file.seekp(4 << 20);
  file << std::string(4096, '\0');
  return path;
}

}  // namespace

TEST_CASE("image patch: overlapping and touching writes join, the later write wins") {
  ImagePatch patch;
  patch.write(10, bytes("aaaa"));
  patch.write(20, bytes("bb"));
  CHECK(patch.runs().size() == 2);
  patch.write(14, bytes("cc"));  // touches the first run: joined
  CHECK(patch.runs().size() == 2);
  patch.write(12, bytes("DDDDDDDDD"));  // 12..20 covers the gap and overlaps the second run
  REQUIRE(patch.runs().size() == 1);
  CHECK(patch.runs().begin()->first == 10);
  CHECK(patched(patch, std::string(30, '.')) == "..........aaDDDDDDDDDb........");
  patch.write(11, bytes("x"));  // inside a run
  CHECK(patched(patch, std::string(30, '.')) == "..........axDDDDDDDDDb........");
  CHECK(patch.extents() == std::vector<DataExtent>{{10, 12}});
  patch.write(0, bytes(""));
  CHECK(patch.runs().size() == 1);

  // apply() on a window: only the overlapping bytes.
  std::string window(5, '-');
  patch.apply(20, {reinterpret_cast<std::uint8_t*>(window.data()), window.size()});
  CHECK(window == "Db---");

  // Against a plain buffer written the same way, for many random writes.
  ImagePatch random_patch;
  std::string expected(4096, '.');
  std::uint32_t state = 7;
  for (int i = 0; i < 2000; ++i) {
    state = state * 1103515245 + 12345;
    std::size_t offset = (state >> 8) % 4000;
    std::size_t length = 1 + (state >> 20) % 90;
    std::string data(length, static_cast<char>('a' + i % 26));
    random_patch.write(offset, bytes(data));
    expected.replace(offset, length, data);
  }
  CHECK(patched(random_patch, std::string(4096, '.')) == expected);
  std::uint64_t previous_end = 0;
  for (const auto& [offset, run] : random_patch.runs()) {
    CHECK((previous_end == 0 || offset > previous_end));  // disjoint and not touching
    previous_end = offset + run.size();
  }
}

TEST_CASE("image patch: a file's data written block after block is one run with every block's bytes") {
  // As libext2fs writes a large file (RKE2's ~80 MiB binary): 4 KiB blocks, each touching the last.
  ImagePatch patch;
  const std::size_t blocks = 6 * 1024;  // 24 MiB: past the size where runs grow on huge pages
  std::vector<std::uint8_t> block(4096);
  for (std::size_t i = 0; i < blocks; ++i) {
    std::fill(block.begin(), block.end(), static_cast<std::uint8_t>(i % 251));
    patch.write(8192 + i * 4096, block);
  }
  REQUIRE(patch.runs().size() == 1);
  // An extent block written just before the data, and one rewritten inside it: still one run, whose
  // bytes are all where they should be.
  patch.write(4096, std::vector<std::uint8_t>(4096, 0xEE));
  patch.write(8192 + 100 * 4096, std::vector<std::uint8_t>(4096, 0xDD));
  REQUIRE(patch.runs().size() == 1);
  const auto& [offset, run] = *patch.runs().begin();
  CHECK(offset == 4096);
  REQUIRE(run.size() == (blocks + 1) * 4096);
  bool all_right = true;
  for (std::size_t i = 0; i < blocks + 1 && all_right; ++i) {
    const std::uint8_t want = i == 0 ? 0xEE : i == 101 ? 0xDD : static_cast<std::uint8_t>((i - 1) % 251);
    all_right = std::all_of(run.begin() + static_cast<std::ptrdiff_t>(i * 4096),
                            run.begin() + static_cast<std::ptrdiff_t>((i + 1) * 4096), [&](std::uint8_t b) { return b == want; });
    INFO("block " << i);
    CHECK(all_right);
  }
}

TEST_CASE("image patch: hashes of a patched image equal those of the file written with the patch") {
  test::TempDir dir;
  const fs::path prepared = make_base_image(dir);
  BmapOptions chunked;
  chunked.range_split_blocks = 256;  // 1 MiB

  // A node's edits through the device: into data, zeros over data, data into a hole, across a chunk
  // boundary, and a rewrite of what it wrote before; reads see the edits.
  PatchedFileBlockDevice device(prepared, (dir / "node.img.partial").string());
  CHECK(device.size() == fs::file_size(prepared));
  device.write_at(4096 + 7, bytes("changed"));
  device.write_at(6 << 20, bytes(std::string(8192, '\0')));
  device.write_at((4 << 20) + 8192, bytes(std::string(5000, 'h')));
  device.write_at((2 << 20) - 10, bytes(std::string(20, 'z')));
  device.write_at(4096 + 9, bytes("AN"));
  device.write_at((12 << 20) + 290, bytes("end"));
  std::string read(16, '\0');
  device.read_at(4096, {reinterpret_cast<std::uint8_t*>(read.data()), read.size()});
  CHECK(read.substr(7, 7) == "chANged");
  CHECK_THROWS_WITH(device.write_at((12 << 20) + 299, bytes("xx")), Catch::Contains("node.img.partial"));
  const Sha256Digest prepared_before = Sha256::of_file(prepared);
  ImagePatch patch = device.take_patch();
  CHECK(Sha256::of_file(prepared) == prepared_before);  // the edits never reached the file

  // The node image as a build writes it: a copy of the prepared image with the patch written over it.
  const fs::path node = dir / "node.img";
  copy_sparse_file(prepared, node, 0600);
  write_image_patch(patch, node);
  const Bmap prepared_bmap = create_bmap(prepared, chunked);
  for (unsigned threads : {0u, 1u}) {
    BmapOptions options = chunked;
    options.threads = threads;
    ImageHashes hashes = hash_patched_image(prepared, patch, "node.img", true, options);
    CHECK(hashes.size == fs::file_size(node));
    CHECK(hashes.sha256 == Sha256::of_file(node));
    CHECK(*hashes.bmap == create_bmap(node, chunked));
  }
  CHECK(update_patched_bmap(prepared, prepared_bmap, patch, chunked) == create_bmap(node, chunked));
  CHECK(update_patched_bmap(prepared, prepared_bmap, ImagePatch{}, chunked) == prepared_bmap);
  // All-zero blocks written over a hole stay a hole, as when the edits are written directly.
  ImagePatch zeros;
  zeros.write(8 << 20, bytes(std::string(4096, '\0')));
  write_image_patch(zeros, node);
  FileDescriptor fd(::open(node.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd);
  CHECK(list_data_extents(fd.get(), 8 << 20, (8 << 20) + 4096, node.string()).empty());
  CHECK(Sha256::of_file(node) == hash_patched_image(prepared, patch, "node.img", false).sha256);
}

// Node images hashed together give each one's own sha256 and size, however many images and threads,
// however often the chains pair up afresh (rounds that end mid-block, rounds of a few bytes), whether
// base's bytes are read once for all or by each image: patches
// that write into data, into holes, into the same chunk and into chunks only one of them touches,
// into the image's last, incomplete block; and an image that is the prepared image itself.
TEST_CASE("image patch: patched images hashed together give each one's sha256") {
  test::TempDir dir;
  const fs::path prepared = make_base_image(dir);
  ImagePatch first;
  first.write(4096 + 7, bytes("first"));
  first.write((4 << 20) + 8192, bytes(std::string(5000, 'f')));
  first.write((12 << 20) + 100, bytes("tail"));
  ImagePatch second;
  second.write(4096 + 9, bytes("second"));
  second.write(8 << 20, bytes(std::string(70000, 's')));
  ImagePatch third;
  third.write((12 << 20) + 290, bytes("end"));
  third.write(10 << 20, bytes(std::string(3000, 't')));
  const ImagePatch nothing;
  auto written = [&](const ImagePatch& patch, const std::string& name) {
    const fs::path image = dir / name;
    copy_sparse_file(prepared, image, 0600);
    write_image_patch(patch, image);
    return image;
  };
  const std::vector<const ImagePatch*> patches{&first, &second, &third, &nothing, &first};
  std::vector<Sha256Digest> expected;
  for (std::size_t i = 0; i < patches.size(); ++i) {
    expected.push_back(Sha256::of_file(written(*patches[i], "node" + std::to_string(i) + ".img")));
  }
  CHECK(expected[3] == Sha256::of_file(prepared));
  for (std::size_t count : {2u, 3u, 5u}) {
    const std::vector<const ImagePatch*> some(patches.begin(), patches.begin() + static_cast<std::ptrdiff_t>(count));
    for (std::size_t threads : {1u, 2u, 3u, 8u}) {
      for (std::uint64_t round : {std::uint64_t{64} << 20, std::uint64_t{100001}, std::uint64_t{4096 + 13}}) {
        // Chunks kept for all, none (every image reads its own), or one (dropped and read again).
        for (std::size_t kept : {24u, 0u, 1u}) {
          INFO(count << " images on " << threads << " threads, rounds of " << round << " bytes, " << kept << " chunks kept");
          const auto hashes = hash_patched_images(prepared, some, "images", nullptr, threads, round, kept);
          REQUIRE(hashes.size() == count);
          for (std::size_t i = 0; i < count; ++i) {
            CHECK(hashes[i].sha256 == expected[i]);
            CHECK(hashes[i].size == fs::file_size(prepared));
            CHECK_FALSE(hashes[i].bmap);
          }
        }
      }
    }
  }

  // As a build hashes them: with ranges whose bytes are read from the file they are a copy of (an
  // archive not yet written into the prepared image), one of them under a patch.
  const std::string archive = test::random_bytes(3 << 20, 9);
  test::write_file(dir / "archive", archive);
  const CopiedFiles copied{{dir / "archive"}, {{2 << 20, 3 << 20, 0, 0}}, {}};
  const auto through_copies = hash_patched_images(prepared, {&first, &second, &third}, "images", &copied, 2, 1 << 20);
  CHECK(through_copies[0].sha256 == hash_patched_image(prepared, first, "first.img", false, {}, &copied).sha256);
  CHECK(through_copies[1].sha256 == hash_patched_image(prepared, second, "second.img", false, {}, &copied).sha256);
  CHECK(through_copies[2].sha256 == hash_patched_image(prepared, third, "third.img", false, {}, &copied).sha256);
  CHECK(through_copies[0].sha256 != expected[0]);
}
