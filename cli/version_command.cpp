#include <archive.h>
#include <curl/curl.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"

namespace aggrik8s::cli {

Command version_command() {
  CommandSpec spec{"version", "", "Print the version of aggrik8s-image and of the libraries it uses",
                   "", {{"json", '\0', "", "machine-readable output"}}, 0, 0};
  return {spec, [](const ParsedArguments& args) {
            std::string curl = curl_version_info(CURLVERSION_NOW)->version;
            std::string archive = archive_version_string();
            if (args.flag("json")) {
              nlohmann::json out{{"version", AGGRIK8S_VERSION}, {"libcurl", curl}, {"libarchive", archive}};
              std::printf("%s\n", out.dump(2).c_str());
            } else {
              std::printf("aggrik8s-image %s\nlibcurl %s, %s\n", AGGRIK8S_VERSION, curl.c_str(), archive.c_str());
            }
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
