// libFuzzer target for the image profile reader: the input is a profile file, read through the same
// path `aggrik8s-image build` takes (yaml-cpp, ConfigNode with file positions, `extends:`, typed
// reading and validation of every section). Whatever the bytes, load_profile returns a profile or
// nullopt with diagnostics: a yaml-cpp exception, a crash or an abort is a bug. Secret and overlay
// checks are off: they look at the host, not at the input.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "builder/profile.hpp"
#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "tests/fuzz/fuzz_scratch_directory.hpp"

using namespace aggrik8s;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::ScratchDirectory scratch;
  const std::filesystem::path file = scratch.path() / "profile.yaml";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  Diagnostics diagnostics;
  builder::ProfileCheckOptions options;
  options.check_secrets = false;
  options.check_paths = false;
  std::optional<builder::Profile> profile = builder::load_profile(file, diagnostics, options);
  if (profile) {
    if (diagnostics.has_errors()) std::abort();  // a profile is only returned without errors
    (void)profile->inputs();
    (void)profile->node_names();
  }
  return 0;
}
