#pragma once
// Checking paths that a configuration names, from the readers that report every other problem as a
// file:line:col diagnostic. The throwing std::filesystem calls (exists, is_directory,
// weakly_canonical without an error_code) let a filesystem_error escape such a reader for a name
// component longer than NAME_MAX, a loop of links or a directory it may not search: the profile_yaml
// fuzz target found `extends:` with a 300-byte name ending the process. The readers use the
// error_code overloads and this to word what they found.
#include <string>
#include <string_view>
#include <system_error>

namespace aggrik8s {

// The end of a message about a path that is not what the configuration needs: `otherwise` ("does not
// exist", "is not a directory") when the check simply said no (including a missing component), or
// the error that stopped the check.
inline std::string path_check_failure(const std::error_code& ec, std::string_view otherwise) {
  if (!ec || ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) return std::string(otherwise);
  return "cannot be checked: " + ec.message();
}

}  // namespace aggrik8s
