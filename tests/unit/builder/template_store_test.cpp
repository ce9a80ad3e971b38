#include "builder/template_store.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

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
                                      [](const fs::path& file) { test::write_file(file, "twelve bytes"); });
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
  // Another format's store does not trust it, and removes it.
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
