#include "builder/talos/iso_template_cache.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <algorithm>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

IsoTemplateKeyParts sample_parts() {
  IsoTemplateKeyParts parts;
  parts.input_iso = Sha256::of("input iso");
  parts.source_date_epoch = 1767225600;
  parts.volume_id = "metal-iso";
  parts.uki_args = {"console=ttyS0", "talos.config=metal-iso"};
  parts.node_files = {{"/config.yaml", 0400, -2, 4096}, {"/boot/grub/grub.cfg", 0444, -2, 2048}};
  return parts;
}

void store_bytes(const IsoTemplateCache& cache, const std::string& key, const std::string& bytes) {
  cache.store(key, sample_parts(), Sha256::of(bytes), [&](const fs::path& file) { test::write_file(file, bytes); });
}

}  // namespace

TEST_CASE("iso template cache: the key changes with every part that decides a template's bytes", "[talos][template-cache]") {
  auto key = iso_template_key(sample_parts());
  REQUIRE(key);  // the test binary has a build ID
  CHECK(key->size() == 64);
  CHECK(iso_template_key(sample_parts()) == key);
  std::vector<IsoTemplateKeyParts> changed(7, sample_parts());
  changed[0].input_iso = Sha256::of("another iso");
  changed[1].source_date_epoch += 1;
  changed[2].volume_id = "other";
  changed[3].uki_args.push_back("ip=dhcp");
  changed[4].node_files[0].size = 6144;
  changed[5].node_files[1].mode = 0400;
  changed[6].node_files.pop_back();
  for (std::size_t i = 0; i < changed.size(); ++i) {
    INFO(i);
    CHECK(iso_template_key(changed[i]) != key);
  }
}

TEST_CASE("iso template cache: stored and found with its SHA-256, changed or unrecorded templates removed", "[talos][template-cache]") {
  test::TempDir dir;
  IsoTemplateCache cache(dir.path());
  std::string key = *iso_template_key(sample_parts());
  CHECK_FALSE(cache.find(key));
  store_bytes(cache, key, "template bytes");
  auto found = cache.find(key);
  REQUIRE(found);
  CHECK(found->path == dir / "talos-templates" / (key + ".iso"));
  CHECK(found->sha256 == Sha256::of("template bytes"));
  CHECK(test::read_file(found->path) == "template bytes");
  // Nothing but the template, its record and its stamp: no temporary file left.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "talos-templates")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{key + ".iso", key + ".iso.checked", key + ".json"});

  // Edited since it was stored (size and modification time no longer the stamp's): removed, once no
  // build holds it (a lease: template_store.hpp).
  found->in_use.reset();
  test::write_file(found->path, "template bytes, edited");
  CHECK_FALSE(cache.find(key));
  CHECK_FALSE(fs::exists(found->path));
  CHECK_FALSE(fs::exists(dir / "talos-templates" / (key + ".json")));

  // A record from another format (or none): the template is not trusted.
  store_bytes(cache, key, "template bytes");
  test::write_file(dir / "talos-templates" / (key + ".json"), "{\"format\": 99, \"sha256\": \"" + Sha256::of("x").hex() + "\"}");
  CHECK_FALSE(cache.find(key));
  CHECK_FALSE(fs::exists(found->path));
  store_bytes(cache, key, "template bytes");
  cache.forget(key);
  CHECK_FALSE(cache.find(key));
}

TEST_CASE("iso template cache: a failed store leaves nothing, the newest four are kept", "[talos][template-cache]") {
  test::TempDir dir;
  IsoTemplateCache cache(dir.path());
  std::string key = *iso_template_key(sample_parts());
  CHECK_THROWS_WITH(cache.store(key, sample_parts(), Sha256::of(""),
                                [](const fs::path& file) {
                                  test::write_file(file, "half");
                                  throw Error("disk full");
                                }),
                    Catch::Contains("cannot keep the node ISO template in the cache") && Catch::Contains("disk full"));
  CHECK(fs::is_empty(dir / "talos-templates"));
  // A cache directory that cannot be made: a clear error, for the build to warn with.
  test::write_file(dir / "file", "");
  CHECK_THROWS_WITH(IsoTemplateCache(dir / "file").store(key, sample_parts(), Sha256::of(""), [](const fs::path&) {}),
                    Catch::Contains("cannot keep the node ISO template in the cache") && Catch::Contains("cannot create"));

  std::vector<std::string> keys;
  for (int i = 0; i < 6; ++i) {
    IsoTemplateKeyParts parts = sample_parts();
    parts.source_date_epoch += i;
    keys.push_back(*iso_template_key(parts));
    store_bytes(cache, keys.back(), "template " + std::to_string(i));
    // Distinct modification times, however coarse the filesystem's clock.
    fs::last_write_time(dir / "talos-templates" / (keys.back() + ".iso"),
                        fs::file_time_type::clock::now() - std::chrono::minutes(10 - i));
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    INFO(i);
    CHECK(fs::exists(dir / "talos-templates" / (keys[i] + ".iso")) == (i >= 2));
    CHECK(fs::exists(dir / "talos-templates" / (keys[i] + ".json")) == (i >= 2));
  }
}
