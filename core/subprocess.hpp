#pragma once
// Running external tools (e2fsprogs, sfdisk, ...) without a shell: the argument vector goes to exec
// as-is, so file names with spaces or quotes cannot change the command. Standard input is /dev/null
// (nothing we run may prompt), standard output and standard error are captured separately so a
// failure message can quote what the tool said.
#include <filesystem>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace aggrik8s {

struct ProcessResult {
  // The exit status; 128 + signal number when the tool was killed by a signal (as shells report it).
  int exit_code = -1;
  std::string standard_output;
  std::string standard_error;
};

struct ProcessOptions {
  // Added to (or replacing entries of) this process's environment; the rest is inherited.
  std::vector<std::pair<std::string, std::string>> environment;
};

// Runs argv[0] (looked up in PATH when it has no '/'). Throws aggrik8s::Error naming the tool only
// when it cannot be started; a non-zero exit is returned for the caller to judge, because several
// tools use exit codes as answers (e2fsck: 1 = errors corrected).
ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// As run_process, but a non-zero exit is an Error that names the tool, the exit code and the last
// lines of its standard error.
ProcessResult run_process_checked(const std::vector<std::string>& argv,
                                  const ProcessOptions& options = {});

// "e2fsck -fn img?offset=1048576" for messages; arguments with spaces are single-quoted.
std::string describe_command(const std::vector<std::string>& argv);

// Finds a tool in PATH and then in extra_directories. System tools such as e2fsck live in /usr/sbin,
// which is not in an unprivileged user's PATH on Debian, yet they work without root on image files.
// Throws Error naming the tool and where it was looked for.
std::filesystem::path find_executable(const std::string& name,
                                      std::initializer_list<const char*> extra_directories = {
                                          "/usr/sbin", "/sbin"});

}  // namespace aggrik8s
