// The flash plan on real files: the source resolved (pinned through the fetch cache), refused when it is
// the target or does not hash as pinned, and its block map found beside it. Nothing is written.
#include <catch2/catch.hpp>

#include <filesystem>

#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "disk/bmap.hpp"
#include "flash/flash_plan.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

FlashRequest request_for(const test::TempDir& dir, const fs::path& source, const fs::path& target) {
  FlashRequest request;
  request.source = source.string();
  request.target = target;
  request.fetch.cache_dir = dir / "cache";
  return request;
}

}  // namespace

TEST_CASE("flash plan: a pinned source that does not match is a typed mismatch, reported before any write",
          "[flash][integration]") {
  test::TempDir dir;
  test::write_file(dir / "image.img", std::string(8192, 'x'));
  auto wrong = *Sha256Digest::parse(std::string(64, 'a'));

  ArtifactSource source;
  source.location = (dir / "image.img").string();
  source.sha256 = wrong;
  FetchOptions options;
  options.cache_dir = dir / "cache";
  ArtifactFetcher fetcher(options);
  CHECK_THROWS_AS(fetcher.fetch(source), ChecksumMismatchError);

  FlashRequest request = request_for(dir, dir / "image.img", dir / "target.img");
  request.sha256 = wrong;
  CHECK_THROWS_WITH(plan_flash(request), Catch::StartsWith("source checksum mismatch: ") &&
                                             Catch::Contains("sha256 mismatch") &&
                                             Catch::EndsWith("; nothing was written"));
  CHECK_FALSE(fs::exists(dir / "target.img"));

  request.sha256 = Sha256::of_file(dir / "image.img");
  FlashPlan plan = plan_flash(request);
  CHECK(plan.target.kind == FlashTargetKind::new_file);
  CHECK(plan.stream != nullptr);
}

TEST_CASE("flash plan: the source is never the target, and must exist", "[flash][integration]") {
  test::TempDir dir;
  test::write_file(dir / "image.img", std::string(8192, 'x'));
  fs::create_symlink(dir / "image.img", dir / "link.img");
  CHECK_THROWS_WITH(plan_flash(request_for(dir, dir / "image.img", dir / "link.img")),
                    (dir / "link.img").string() + " is the source image itself");
  CHECK_THROWS_WITH(plan_flash(request_for(dir, dir / "missing.img", dir / "target.img")),
                    (dir / "missing.img").string() + ": no such file");
}

TEST_CASE("flash plan: the block map beside the source is used unless told otherwise", "[flash][integration]") {
  test::TempDir dir;
  test::write_file(dir / "image.img", std::string(1 << 20, 'x'));
  write_bmap_file(create_bmap(dir / "image.img"), dir / "image.bmap");

  CHECK(plan_flash(request_for(dir, dir / "image.img", dir / "target.img")).bmap.has_value());
  FlashRequest without = request_for(dir, dir / "image.img", dir / "target.img");
  without.look_for_bmap = false;
  CHECK_FALSE(plan_flash(without).bmap.has_value());
  FlashRequest named = without;
  named.bmap = (dir / "image.bmap").string();
  CHECK(plan_flash(named).bmap.has_value());
}
