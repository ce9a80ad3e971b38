#include "builder/template_store.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("template store: a file is found with its record, format and size, and only by its own key", "[template-store]") {
  test::TempDir dir;
  const TemplateStore store(dir / "bases", ".img", 2, 3, "the grown base image");
  CHECK_FALSE(store.find("k1"));
  const fs::path stored = store.store("k1", {{"base", "abc"}, {"image_size", 42}},
                                      [](const fs::path& file) { test::write_file(file, "twelve bytes"); })
                              .path;
  CHECK(stored == dir / "bases" / "k1.img");
  CHECK(names_in(dir / "bases") == std::vector<std::string>{"k1.img", "k1.img.checked", "k1.json"});
  auto found = store.find("k1");
  REQUIRE(found);
  CHECK(found->path == stored);
  CHECK(found->record["base"] == "abc");
  CHECK(found->record["image_size"] == 42);
  CHECK(found->record["format"] == 3);
  CHECK(found->record["size"] == 12);
  CHECK_FALSE(store.find("k2"));
  // Another format's store does not trust it, and removes it (once this build's lease is dropped).
  found.reset();
  CHECK_FALSE(TemplateStore(dir / "bases", ".img", 2, 4, "x").find("k1"));
  CHECK(fs::is_empty(dir / "bases"));
}

TEST_CASE("template store: a changed file or a missing record is removed, a failed write leaves nothing", "[template-store]") {
  test::TempDir dir;
  const TemplateStore store(dir / "bases", ".img", 2, 1, "the grown base image");
  store.store("k", {}, [](const fs::path& file) { test::write_file(file, "bytes"); });
  test::write_file(dir / "bases" / "k.img", "other bytes");
  CHECK_FALSE(store.find("k"));
  CHECK(fs::is_empty(dir / "bases"));

  store.store("k", {}, [](const fs::path& file) { test::write_file(file, "bytes"); });
  fs::remove(dir / "bases" / "k.json");
  CHECK_FALSE(store.find("k"));
  CHECK_FALSE(fs::exists(dir / "bases" / "k.img"));

  CHECK_THROWS_WITH(store.store("k", {},
                                [](const fs::path& file) {
                                  test::write_file(file, "half");
                                  throw Error("resize2fs failed");
                                }),
                    Catch::Contains("cannot keep the grown base image in the cache") && Catch::Contains("resize2fs failed"));
  CHECK(fs::is_empty(dir / "bases"));
}

TEST_CASE("template store: the newest are kept, and partial files over an hour old are removed", "[template-store]") {
  test::TempDir dir;
  const TemplateStore store(dir / "bases", ".img", 2, 1, "the grown base image");
  const auto now = fs::file_time_type::clock::now();
  fs::create_directories(dir / "bases");
  test::write_file(dir / "bases" / "old.img.123.partial", "left by a killed build");
  fs::last_write_time(dir / "bases" / "old.img.123.partial", now - std::chrono::hours(2));
  test::write_file(dir / "bases" / "new.img.456.partial", "another build, storing now");
  for (int i = 0; i < 4; ++i) {
    const std::string key = "k" + std::to_string(i);
    store.store(key, {}, [&](const fs::path& file) { test::write_file(file, key); });
    // Distinct modification times, however coarse the filesystem's clock.
    fs::last_write_time(dir / "bases" / (key + ".img"), now - std::chrono::minutes(10 - i));
  }
  CHECK(names_in(dir / "bases") == std::vector<std::string>{"k2.img", "k2.img.checked", "k2.json", "k3.img",
                                                            "k3.img.checked", "k3.json", "new.img.456.partial"});
}

// Two builds sharing a cache: one reads a file it found (or stored) by its path while the other
// stores more than are kept. The one in use stays until its lease is dropped; the newest are kept
// besides it. A lease is a shared flock on the file, so a second process's pruning sees it too
// (checked here from a child process's flock, not only this one's).
TEST_CASE("template store: a file another build is using is not pruned", "[template-store]") {
  test::TempDir dir;
  const TemplateStore store(dir / "bases", ".img", 2, 1, "the grown base image");
  const auto now = fs::file_time_type::clock::now();
  auto store_one = [&](int i) {
    const std::string key = "k" + std::to_string(i);
    auto found = store.store(key, {}, [&](const fs::path& file) { test::write_file(file, key); });
    fs::last_write_time(dir / "bases" / (key + ".img"), now - std::chrono::minutes(10 - i));
    record_cache_file(dir / "bases" / (key + ".img"));  // the stamp of its new time
    return found;
  };
  {
    const auto stored = store_one(0);
    REQUIRE(stored.in_use);
    store_one(1);
    auto found = store.find("k1");
    REQUIRE(found);
    store_one(2);
    store_one(3);
    // k0 (stored, still held) and k1 (found, held) stay beside the two newest.
    CHECK(names_in(dir / "bases") == std::vector<std::string>{"k0.img", "k0.img.checked", "k0.json", "k1.img",
                                                              "k1.img.checked", "k1.json", "k2.img", "k2.img.checked",
                                                              "k2.json", "k3.img", "k3.img.checked", "k3.json"});
    // A changed file in use is not removed under its user either; its next finder sees it changed.
    test::write_file(dir / "bases" / "k1.img", "changed");
    fs::last_write_time(dir / "bases" / "k1.img", now - std::chrono::minutes(20));
    CHECK_FALSE(store.find("k1"));
    CHECK(fs::exists(dir / "bases" / "k1.img"));
  }
  // Released: the next store prunes to the two newest.
  store_one(4);
  CHECK(names_in(dir / "bases") == std::vector<std::string>{"k3.img", "k3.img.checked", "k3.json", "k4.img",
                                                            "k4.img.checked", "k4.json"});
  // Another process's lease (flock(1) holding k3 shared while this process stores two more).
  const fs::path held = dir / "bases" / "k3.img";
  const fs::path ready = dir / "ready";
  const fs::path release = dir / "release";
  // It ends when told, when the test's directory is gone (a failed REQUIRE), or after 30 s: never left behind.
  const std::string holder = "flock -s " + held.string() + " sh -c 'touch " + ready.string() +
                             "; for i in $(seq 600); do if [ -e " + release.string() + " ] || [ ! -d " +
                             dir.path().string() + " ]; then break; fi; sleep 0.05; done' >/dev/null 2>&1 &";
  REQUIRE(test::run(holder).exit_code == 0);
  for (int i = 0; i < 200 && !fs::exists(ready); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(fs::exists(ready));
  store_one(5);
  store_one(6);
  test::write_file(release, "");
  CHECK(fs::exists(held));
  // The holder gone (its lock released) before the directory is removed.
  for (int i = 0; i < 200 && test::run("flock -n " + held.string() + " true").exit_code != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_FALSE(fs::exists(dir / "bases" / "k4.img"));
  CHECK(fs::exists(dir / "bases" / "k6.img"));
}
