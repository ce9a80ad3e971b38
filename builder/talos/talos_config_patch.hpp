#pragma once
// Patches on a YAML document tree, as `talosctl --config-patch` applies them to a machine config:
//   - RFC 7396 JSON merge patch: maps merge key by key, `null` deletes a key, anything else (lists
//     included) replaces. (talosctl's "strategic merge" appends some lists; RFC 7396 replaces them.
//     docs/proxmox.md says so.)
//   - RFC 6902 JSON patch: add / remove / replace / move / copy / test, paths are RFC 6901 JSON
//     Pointers (`~1` is '/', `~0` is '~'), `-` appends to a list.
// Pure code on ConfigNode trees; a failure throws TalosPatchError naming the operation and the pointer.
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/config_node.hpp"

namespace aggrik8s::builder {

class TalosPatchError : public std::runtime_error {
 public:
  TalosPatchError(SourceLocation where, const std::string& message)
      : std::runtime_error(message), where_(std::move(where)) {}
  // The operation (or merge patch) that failed, in the profile or patch file.
  const SourceLocation& where() const { return where_; }

 private:
  SourceLocation where_;
};

// "/machine/network/interfaces/0" -> {"machine", "network", "interfaces", "0"}; "" -> {} (the whole
// document). Throws std::invalid_argument for a pointer without a leading '/' or a bad '~' escape.
std::vector<std::string> parse_json_pointer(std::string_view pointer);

// RFC 7396: returns `target` with `patch` applied.
ConfigNode apply_merge_patch(const ConfigNode& target, const ConfigNode& patch);

// RFC 6902: `operations` is a list of maps {op, path, value?, from?}. All or nothing: on error the
// target is left unchanged and TalosPatchError says which operation failed and why.
void apply_json_patch(ConfigNode& target, const ConfigNode& operations);

// Structural equality for `test`: maps compare key sets (order-free), lists item by item, scalars by
// text and by whether they are strings (a quoted "1" is not the number 1).
bool same_value(const ConfigNode& a, const ConfigNode& b);

}  // namespace aggrik8s::builder
