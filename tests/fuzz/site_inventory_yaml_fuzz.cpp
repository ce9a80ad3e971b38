// libFuzzer target for the site inventory (`kind: site`, docs/site.md): the input is parsed by
// yaml-cpp into a ConfigNode, read by parse_site_inventory and checked as a whole by check_site, as
// `validate`, `build`, `serve --site` and `export` do. Whatever the bytes, the result is a site or
// diagnostics: a yaml-cpp exception, a crash or an abort is a bug. The file name puts it in an empty
// scratch directory, so relative profile paths name nothing; check_site is skipped when a machine's
// profile is absolute or climbs out (it would read that file from the host).
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "site/site_inventory.hpp"
#include "tests/fuzz/fuzz_scratch_directory.hpp"

using namespace aggrik8s;

namespace {

bool inside(const std::filesystem::path& directory, const std::filesystem::path& profile) {
  std::filesystem::path relative = profile.lexically_normal().lexically_relative(directory);
  return !relative.empty() && *relative.begin() != "..";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  const fuzz::ScratchDirectory scratch;
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(text, (scratch.path() / "site.yaml").string(), diagnostics);
  if (diagnostics.has_errors()) return 0;
  site::SiteInventory inventory = site::parse_site_inventory(tree, diagnostics);
  if (diagnostics.has_errors()) return 0;
  for (const auto& machine : inventory.machines) {
    if (!machine.profile.empty() && !inside(scratch.path(), machine.profile)) return 0;
  }
  site::check_site(inventory, diagnostics);
  for (const auto& machine : inventory.machines) (void)inventory.find(machine.name);
  (void)inventory.profile_files();
  return 0;
}
