// libFuzzer target for `serve`'s netboot.yaml: the input is parsed by yaml-cpp into a ConfigNode and
// read by parse_netboot_config, as `serve --config` does on start and on SIGHUP. Whatever the bytes,
// the result is a configuration or diagnostics: a yaml-cpp exception, a crash or an abort is a bug.
// The checks that look at the host (tftp/http roots are directories) see paths inside an empty
// scratch directory or whatever absolute path the input names: they only stat, never read.
#include <cstdint>
#include <string>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "netboot/service/netboot_config.hpp"

using namespace aggrik8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(text, "netboot.yaml", diagnostics);
  if (diagnostics.has_errors()) return 0;
  netboot::NetbootConfig config = netboot::parse_netboot_config(tree, diagnostics);
  if (!diagnostics.has_errors()) (void)netboot::state_directory(config);
  return 0;
}
