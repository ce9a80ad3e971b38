#include "netboot/service/state_file_json.hpp"

#include <fstream>
#include <sstream>

namespace aggrik8s::netboot {

std::string state_file_json(const StateFileFormat& format, nlohmann::ordered_json items) {
  nlohmann::ordered_json top;
  top["format"] = format.format;
  top["version"] = 1;
  top[std::string(format.items)] = std::move(items);
  return top.dump(2) + "\n";
}

Error state_file_error(const std::string& file, const std::string& field, const std::string& expected) {
  return Error(file + ": " + field + ": expected " + expected);
}

nlohmann::json parse_state_file_json(std::string_view text, const std::string& file, const StateFileFormat& format) {
  nlohmann::json top;
  try {
    top = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + ": not JSON (" + e.what() + "); expected " + std::string(format.what) + " (docs/netboot.md)");
  }
  if (!top.is_object()) throw state_file_error(file, "the top level", "an object");
  if (!top.contains("format") || !top["format"].is_string() || top["format"].get<std::string>() != format.format) {
    throw state_file_error(file, "'format'", "\"" + std::string(format.format) + "\"");
  }
  if (!top.contains("version") || top["version"] != 1) {
    throw state_file_error(file, "'version'", "1 (the only version this serve reads)");
  }
  const std::string items(format.items);
  if (!top.contains(items) || !top[items].is_object()) {
    throw state_file_error(file, "'" + items + "'", std::string(format.items_expected));
  }
  return top[items];
}

std::optional<std::string> read_state_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(file.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace aggrik8s::netboot
