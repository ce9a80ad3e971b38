// libFuzzer target for the netboot nodes file: the input is a nodes.yaml, parsed by yaml-cpp into a
// ConfigNode (file positions, duplicate keys) and read by parse_node_inventory, as the server does on
// start and on SIGHUP. Whatever the bytes, the result is an inventory or diagnostics: a yaml-cpp
// exception, a crash or an abort is a bug. The tree is also written back as YAML (to_yaml, used when
// a merged profile is shown) and read again.
#include <cstdint>
#include <string>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "netboot/service/node_inventory.hpp"

using namespace aggrik8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(text, "nodes.yaml", diagnostics);
  if (diagnostics.has_errors()) return 0;
  netboot::NodeInventory inventory = netboot::parse_node_inventory(tree, diagnostics, /*check_files=*/false);
  if (!diagnostics.has_errors()) {
    for (const auto& node : inventory.nodes) {
      (void)inventory.find(node.name);
      (void)inventory.profile_of(node);
    }
    (void)inventory.unknown_node_profile();
  }
  Diagnostics again;
  (void)load_yaml_string(to_yaml(tree), "nodes-again.yaml", again);
  return 0;
}
