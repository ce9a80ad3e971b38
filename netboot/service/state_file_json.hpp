#pragma once
// The envelope of serve's small state files (talos-wipe.json, dhcp-nodes.json):
//   {"format": "<format>", "version": 1, "<items key>": { ... }}
// written with two-space indentation and a final newline; read back with errors that name the file
// and the field ("FILE: nodes.t1.served: expected ..."). Pure; the stores read and replace the files.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace aggrik8s::netboot {

struct StateFileFormat {
  std::string_view format;          // "aggrik8s-talos-wipe"
  std::string_view what;            // "serve's Talos wipe state", for "not JSON" messages
  std::string_view items;           // the key of the items object: "nodes"
  std::string_view items_expected;  // "an object keyed by node name"
};

std::string state_file_json(const StateFileFormat& format, nlohmann::ordered_json items);
// The items object, after the format and version are checked.
nlohmann::json parse_state_file_json(std::string_view text, const std::string& file, const StateFileFormat& format);
// "FILE: FIELD: expected EXPECTED", for the items' own checks.
Error state_file_error(const std::string& file, const std::string& field, const std::string& expected);
// The file's text; nullopt when there is none yet. Error naming it when it cannot be read.
std::optional<std::string> read_state_file(const std::filesystem::path& file);

}  // namespace aggrik8s::netboot
