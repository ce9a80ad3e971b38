#include "core/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"

extern char** environ;

namespace aggrik8s {
namespace {

struct Pipe {
  FileDescriptor read_end;
  FileDescriptor write_end;
};

Pipe make_pipe(const std::string& tool) {
  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw_system_error("cannot create a pipe for " + tool, errno);
  return {FileDescriptor(fds[0]), FileDescriptor(fds[1])};
}

// The merged environment as "NAME=value" strings; std::map keeps the child's environment in a stable
// order, which makes runs comparable when debugging reproducibility.
std::vector<std::string> merged_environment(const ProcessOptions& options) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    auto equals = text.find('=');
    if (equals == std::string::npos) continue;
    variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  for (const auto& [name, value] : options.environment) variables[name] = value;
  std::vector<std::string> result;
  result.reserve(variables.size());
  for (const auto& [name, value] : variables) result.push_back(name + "=" + value);
  return result;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Both pipes are drained together: a tool that fills one pipe while we block on the other would
// otherwise deadlock.
void drain(FileDescriptor& out, FileDescriptor& err, ProcessResult& result, const std::string& tool) {
  std::array<char, 65536> buffer{};
  while (out || err) {
    std::array<pollfd, 2> fds{};
    nfds_t count = 0;
    std::array<std::pair<FileDescriptor*, std::string*>, 2> targets{};
    if (out) {
      fds[count] = {out.get(), POLLIN, 0};
      targets[count++] = {&out, &result.standard_output};
    }
    if (err) {
      fds[count] = {err.get(), POLLIN, 0};
      targets[count++] = {&err, &result.standard_error};
    }
    if (::poll(fds.data(), count, -1) < 0) {
      if (errno == EINTR) continue;
      throw_system_error("cannot read the output of " + tool, errno);
    }
    for (nfds_t i = 0; i < count; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      ssize_t n = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        targets[i].first->reset();
      } else {
        targets[i].second->append(buffer.data(), static_cast<std::size_t>(n));
      }
    }
  }
}

std::string last_lines(const std::string& text, std::size_t max_lines) {
  std::size_t end = text.size();
  while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == ' ')) --end;
  std::size_t start = end;
  std::size_t lines = 0;
  while (start > 0) {
    if (text[start - 1] == '\n' && ++lines == max_lines) break;
    --start;
  }
  return text.substr(start, end - start);
}

}  // namespace

std::string describe_command(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) {
    if (!text.empty()) text += ' ';
    bool plain = !arg.empty() && arg.find_first_of(" \t\n'\"\\$`*&;|<>()") == std::string::npos;
    text += plain ? arg : "'" + arg + "'";
  }
  return text;
}

std::filesystem::path find_executable(const std::string& name,
                                      std::initializer_list<const char*> extra_directories) {
  if (name.find('/') != std::string::npos) return name;
  std::vector<std::string> directories;
  if (const char* path = std::getenv("PATH")) {
    std::string all(path);
    std::size_t start = 0;
    while (start <= all.size()) {
      auto colon = all.find(':', start);
      if (colon == std::string::npos) colon = all.size();
      if (colon > start) directories.push_back(all.substr(start, colon - start));
      start = colon + 1;
    }
  }
  for (const char* dir : extra_directories) directories.emplace_back(dir);
  for (const auto& dir : directories) {
    auto candidate = std::filesystem::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  std::string searched;
  for (const auto& dir : directories) searched += (searched.empty() ? "" : ":") + dir;
  throw Error("cannot find the program '" + name + "' (searched " + searched + "); install it (" + name +
              " is needed to work on disk images)");
}

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw Error("run_process: empty argument vector");
  const std::string& tool = argv.front();
  auto program = find_executable(tool);

  Pipe out = make_pipe(tool);
  Pipe err = make_pipe(tool);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out.write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write_end.get(), STDERR_FILENO);

  std::vector<std::string> args = argv;
  std::vector<std::string> env = merged_environment(options);
  auto arg_pointers = c_strings(args);
  auto env_pointers = c_strings(env);

  pid_t pid = -1;
  int spawn_error =
      ::posix_spawn(&pid, program.c_str(), &actions, nullptr, arg_pointers.data(), env_pointers.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) throw_system_error("cannot start " + program.string(), spawn_error);

  out.write_end.reset();
  err.write_end.reset();
  ProcessResult result;
  drain(out.read_end, err.read_end, result, tool);

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_system_error("cannot wait for " + tool, errno);
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

ProcessResult run_process_checked(const std::vector<std::string>& argv, const ProcessOptions& options) {
  ProcessResult result = run_process(argv, options);
  if (result.exit_code != 0) {
    std::string said = last_lines(result.standard_error.empty() ? result.standard_output : result.standard_error, 6);
    throw Error(argv.front() + " failed with exit code " + std::to_string(result.exit_code) + " (" +
                describe_command(argv) + ")" + (said.empty() ? "" : ": " + said));
  }
  return result;
}

}  // namespace aggrik8s
