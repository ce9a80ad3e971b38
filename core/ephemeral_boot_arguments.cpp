#include "core/ephemeral_boot_arguments.hpp"

namespace aggrik8s {

std::string ephemeral_boot_cmdline(std::string_view node_cmdline, const EphemeralRootLocation& root, const std::string& node) {
  const std::string base = root.url_base + "/" + root.build_id;
  std::string line(node_cmdline);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  if (!line.empty()) line += ' ';
  line += "aggrik8s.root=" + base + "/" + root.root_file + " aggrik8s.root_sha256=" + root.root_sha256 +
          " aggrik8s.identity=" + base + "/identity/" + node + "\n";
  return line;
}

}  // namespace aggrik8s
