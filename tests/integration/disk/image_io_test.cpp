// The image I/O stages against the real tools users have: bmaptool, xz, zstd, gzip, bzip2, zip.
#include <sys/stat.h>

#include <sys/resource.h>

#include <csignal>

#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/image_compressor.hpp"
#include "disk/image_decoder_errors.hpp"
#include "disk/image_decompressor.hpp"
#include "disk/image_stream.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

std::string q(const fs::path& path) { return "'" + path.string() + "'"; }

void require_run(const std::string& command) {
  auto result = test::run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

bool same_file(const fs::path& a, const fs::path& b) { return test::run("cmp " + q(a) + " " + q(b)).exit_code == 0; }

std::uint64_t allocated_bytes(const fs::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return static_cast<std::uint64_t>(info.st_blocks) * 512;
}

// 64 MiB, mostly hole: random data (incompressible), text (compressible), an allocated run of zeros,
// and a few bytes in the very last block.
fs::path make_image(const test::TempDir& dir) {
  auto image = dir / "image.img";
  require_run("truncate -s 64M " + q(image));
  require_run("head -c 3M /dev/urandom | dd of=" + q(image) + " bs=1M seek=1 conv=notrunc status=none");
  require_run("head -c 1234567 /dev/urandom | dd of=" + q(image) + " bs=4096 seek=5000 conv=notrunc status=none");
  require_run("yes 'kernel: rke2 node ready' | head -c 2M | dd of=" + q(image) +
              " bs=1M seek=40 conv=notrunc status=none");
  require_run("dd if=/dev/zero of=" + q(image) + " bs=1M seek=50 count=2 conv=notrunc status=none");
  require_run("printf 'end' | dd of=" + q(image) + " bs=1 seek=67108000 conv=notrunc status=none");
  return image;
}

}  // namespace

TEST_CASE("image_io: bmaptool copy accepts our bmap and we parse bmaptool create output") {
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap ours = create_bmap(image);
  write_bmap_file(ours, dir / "ours.bmap");
  // The allocated zero run at 50 MiB is left out; holes are left out by both.
  CHECK(ours.mapped_blocks_count() * 4096 < 8u << 20);

  require_run("bmaptool copy --bmap " + q(dir / "ours.bmap") + " " + q(image) + " " + q(dir / "copy.img"));
  CHECK(same_file(image, dir / "copy.img"));

  require_run("bmaptool create -o " + q(dir / "theirs.bmap") + " " + q(image));
  Bmap theirs = read_bmap_file(dir / "theirs.bmap");
  CHECK(theirs.image_size == ours.image_size);
  CHECK(theirs.mapped_blocks_count() >= ours.mapped_blocks_count());

  // Without zero skipping we map what bmaptool maps and write the very same file.
  BmapOptions like_bmaptool;
  like_bmaptool.skip_zero_blocks = false;
  Bmap plain = create_bmap(image, like_bmaptool);
  CHECK(plain == theirs);
  CHECK(format_bmap(plain) == test::read_file(dir / "theirs.bmap"));
}

TEST_CASE("image_io: zstd and xz decompress what we compress") {
  test::TempDir dir;
  auto image = make_image(dir);
  for (auto format : {ImageCompressionFormat::zstd, ImageCompressionFormat::xz}) {
    bool xz = format == ImageCompressionFormat::xz;
    ImageCompressionOptions options;
    options.format = format;
    options.threads = 2;
    auto output = dir / (std::string("image.img") + file_extension(format));
    CompressedImage result = ImageCompressor(options).compress(image, output);
    CHECK(result.image_size == fs::file_size(image));
    CHECK(result.compressed_size == fs::file_size(output));
    CHECK(result.sha256 == Sha256::of_file(output));
    CHECK_FALSE(fs::exists(output.string() + ".partial"));

    require_run(std::string(xz ? "xz" : "zstd -q") + " -dc " + q(output) + " > " + q(dir / "back.img"));
    CHECK(same_file(image, dir / "back.img"));

    // The thread count does not change the bytes.
    options.threads = 1;
    auto single = dir / (std::string("single") + file_extension(format));
    CHECK(ImageCompressor(options).compress(image, single).sha256 == result.sha256);
  }
}

TEST_CASE("image_io: we decompress what xz zstd gzip bzip2 and zip wrote into sparse files") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("xz -T0 -k -c " + q(image) + " > " + q(dir / "t.img.xz"));
  require_run("zstd -T0 -q -c " + q(image) + " > " + q(dir / "t.img.zst"));
  require_run("gzip -c " + q(image) + " > " + q(dir / "t.img.gz"));
  require_run("bzip2 -c " + q(image) + " > " + q(dir / "t.img.bz2"));
  require_run("cd " + q(dir.path()) + " && zip -q t.zip image.img");
  require_run("cp --sparse=never " + q(image) + " " + q(dir / "full.img"));
  // Content decides, not the name: an xz file without a telling name is still read as xz.
  require_run("cp " + q(dir / "t.img.xz") + " " + q(dir / "download.bin"));

  struct Case {
    const char* file;
    ImageInputFormat format;
  };
  for (auto [file, format] : {Case{"t.img.xz", ImageInputFormat::xz}, Case{"t.img.zst", ImageInputFormat::zstd},
                              Case{"t.img.gz", ImageInputFormat::gzip}, Case{"t.img.bz2", ImageInputFormat::bzip2},
                              Case{"t.zip", ImageInputFormat::zip}, Case{"full.img", ImageInputFormat::raw},
                              Case{"download.bin", ImageInputFormat::xz}}) {
    INFO(file);
    auto output = dir / "out.img";
    DecompressedImage result = ImageDecompressor().decompress(dir / file, output);
    CHECK(result.format == format);
    CHECK(result.size == fs::file_size(image));
    CHECK(same_file(image, output));
    CHECK(allocated_bytes(output) < 8u << 20);  // of 64 MiB, ~6.3 MiB is non-zero data
    CHECK_FALSE(fs::exists(output.string() + ".partial"));
    fs::remove(output);
  }
}

TEST_CASE("image_io: corrupt and truncated inputs fail cleanly, leaving no output") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("xz -T0 -k -c " + q(image) + " > " + q(dir / "bad.img.xz"));
  auto middle = fs::file_size(dir / "bad.img.xz") / 2;
  require_run("printf '\\377\\377\\377\\377\\377\\377\\377\\377' | dd of=" + q(dir / "bad.img.xz") +
              " bs=1 seek=" + std::to_string(middle) + " conv=notrunc status=none");
  require_run("zstd -q -c " + q(image) + " | head -c 1000000 > " + q(dir / "cut.img.zst"));
  require_run("xz -c " + q(image) + " | head -c 1000000 > " + q(dir / "cut.img.xz"));
  test::write_file(dir / "page.img.xz", "<html>404</html>\n");

  auto output = dir / "out.img";
  auto expect_failure = [&](const char* file, const char* what) {
    INFO(file);
    CHECK_THROWS_WITH(ImageDecompressor().decompress(dir / file, output),
                      Catch::Contains((dir / file).string()) && Catch::Contains(what));
    CHECK_FALSE(fs::exists(output));
    CHECK_FALSE(fs::exists(output.string() + ".partial"));
  };
  expect_failure("bad.img.xz", "corrupt");
  expect_failure("cut.img.zst", "truncated");
  expect_failure("cut.img.xz", "truncated");
  expect_failure("page.img.xz", "not in that format");
}

TEST_CASE("image_io: a zip must hold exactly one .img") {
  test::TempDir dir;
  test::write_file(dir / "a.img", "a");
  test::write_file(dir / "b.img", "b");
  test::write_file(dir / "README.txt", "r");
  require_run("cd " + q(dir.path()) + " && zip -q two.zip a.img b.img && zip -q none.zip README.txt");
  CHECK_THROWS_WITH(ImageDecompressor().decompress(dir / "two.zip", dir / "out.img"),
                    Catch::Contains("two.zip") && Catch::Contains("several .img files (a.img, b.img)"));
  CHECK_THROWS_WITH(ImageDecompressor().decompress(dir / "none.zip", dir / "out.img"),
                    Catch::Contains("no .img file") && Catch::Contains("README.txt"));
  CHECK_FALSE(fs::exists(dir / "out.img"));
}

TEST_CASE("image_io: a full output disk is reported against the output") {
  // A file size limit fails the writes past it (EFBIG, with SIGXFSZ ignored) as a full disk fails them
  // (ENOSPC). (A ".partial" symlink to /dev/full did this once; compressed outputs hold secrets and no
  // longer follow a link.)
  test::TempDir dir;
  auto image = make_image(dir);
  struct rlimit before {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &before) == 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = before;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    ImageCompressor().compress(image, dir / "out.img.zst");
  } catch (const std::exception& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, old_handler);
  CHECK_THAT(message, Catch::Contains("out.img.zst: File too large"));
  CHECK_FALSE(fs::exists(dir / "out.img.zst"));
  CHECK_FALSE(fs::exists(dir / "out.img.zst.partial"));

  // A symlink where the .partial goes is refused, not written through.
  fs::create_symlink("/dev/full", dir / "out.img.zst.partial");
  CHECK_THROWS_WITH(ImageCompressor().compress(image, dir / "out.img.zst"), Catch::Contains("out.img.zst"));
  CHECK_FALSE(fs::exists(dir / "out.img.zst"));
}

TEST_CASE("image_io: a caller's temporary output is named by the file it becomes") {
  // A build writes <node>.img.zst.partial itself and publishes it with the node's other files; a full
  // disk must be reported as "<node>.img.zst", not as a temporary name the user never asked for (it
  // used to read "pi5.img.zst.partial.partial").
  test::TempDir dir;
  auto image = make_image(dir);
  CHECK_THROWS_WITH(ImageCompressor().compress_unpublished(image, "/dev/full", dir / "pi5.img.zst"),
                    Catch::Equals("cannot write " + (dir / "pi5.img.zst").string() + ": No space left on device"));
  auto written = ImageCompressor().compress_unpublished(image, dir / "pi5.img.zst.partial", dir / "pi5.img.zst");
  CHECK(fs::file_size(dir / "pi5.img.zst.partial") == written.compressed_size);
  CHECK_FALSE(fs::exists(dir / "pi5.img.zst"));
  CHECK_FALSE(fs::exists(dir / "pi5.img.zst.partial.partial"));
}

TEST_CASE("image_io: the error's type says whether the input or the output is at fault") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("zstd -q -c " + q(image) + " | head -c 1000000 > " + q(dir / "cut.img.zst"));
  require_run("zstd -q -c " + q(image) + " > " + q(dir / "good.img.zst"));
  auto output = dir / "out.img";

  auto input_error_of = [](const auto& decode) -> std::optional<ImageInputError> {
    try {
      decode();
    } catch (const ImageInputError& e) {
      return e;
    }
    return std::nullopt;
  };
  auto cut = input_error_of([&] { ImageDecompressor().decompress(dir / "cut.img.zst", output); });
  REQUIRE(cut);
  CHECK(cut->file() == dir / "cut.img.zst");
  CHECK(cut->message_naming_file_as("it") == "cannot decompress it (zstd): the file is truncated: it ends in the middle of a zstd frame");
  // The flasher's stream reads the same bytes through the same decoder: the same error.
  auto streamed = input_error_of([&] {
    auto stream = open_image_stream(dir / "cut.img.zst");
    std::vector<std::uint8_t> buffer(1 << 20);
    while (stream->read(buffer) > 0) {
    }
  });
  REQUIRE(streamed);
  CHECK(std::string(streamed->what()) == cut->what());
  CHECK(input_error_of([&] { ImageDecompressor().decompress(dir / "missing.img.xz", output); }));

  // /dev/full fails every write with ENOSPC; a symlink lets the ".partial" name point at it.
  fs::create_symlink("/dev/full", output.string() + ".partial");
  try {
    ImageDecompressor().decompress(dir / "good.img.zst", output);
    FAIL("no error");
  } catch (const ImageOutputError& e) {
    CHECK(e.file() == output.string() + ".partial");
    CHECK_THAT(e.what(), Catch::Contains("No space left on device"));
  }
  CHECK_FALSE(fs::exists(output));
  CHECK_THROWS_AS(ImageDecompressor().decompress(dir / "good.img.zst", dir / "no-such-dir" / "out.img"), ImageOutputError);
}

TEST_CASE("image_io: a pipe as the image is refused at once, with nobody writing to it") {
  test::TempDir dir;
  // A FIFO nobody writes to: opening it to read would wait forever.
  REQUIRE(::mkfifo((dir / "image.img").c_str(), 0600) == 0);
  try {
    open_image_stream(dir / "image.img");
    FAIL("no error");
  } catch (const ImageInputError& e) {
    CHECK_THAT(e.what(), Catch::Contains("image.img is a pipe, not an image file: images are read by offset"));
  }
  CHECK_THROWS_WITH(detect_image_input_format(dir / "image.img"), Catch::Contains("is a pipe"));
}
