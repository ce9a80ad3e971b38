#pragma once
// Helpers the test suites share: temporary directories that clean up, file I/O, running commands.
#include <filesystem>
#include <string>
#include <vector>

namespace aggrik8s::test {

// A fresh directory under the build tree (not /tmp, so failed runs can be inspected); removed when the
// object goes out of scope unless AGGRIK8S_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& content);
std::string read_file(const std::filesystem::path& path);
// `size` bytes that do not compress and differ with `seed`: the same for the same seed on every run.
std::string random_bytes(std::size_t size, unsigned seed);

// Everything written to stderr (the log) while it lives goes to `file` instead, for tests that check
// what was logged (and what must never be: secrets).
class StderrToFile {
 public:
  explicit StderrToFile(std::filesystem::path file);
  ~StderrToFile();
  StderrToFile(const StderrToFile&) = delete;
  StderrToFile& operator=(const StderrToFile&) = delete;
  std::string text() const;

 private:
  std::filesystem::path file_;
  int saved_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};
// Runs a shell command line; output captured. For tests only (no quoting help: callers quote).
CommandResult run(const std::string& command_line);

std::filesystem::path source_dir();
std::filesystem::path cli_path();

// A loop-mounted XFS (reflinks) in `dir` for the test's life, where the suite runs as root;
// otherwise AGGRIK8S_REFLINK_TEST_DIR if set (a directory of its own is made there); otherwise none
// (path() empty, reason() says why).
class ReflinkPlace {
 public:
  explicit ReflinkPlace(const std::filesystem::path& dir);
  ~ReflinkPlace();
  ReflinkPlace(const ReflinkPlace&) = delete;
  ReflinkPlace& operator=(const ReflinkPlace&) = delete;
  const std::filesystem::path& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path mounted_;
  bool owned_dir_ = false;
  std::string reason_ = "not root and AGGRIK8S_REFLINK_TEST_DIR not set";
};

}  // namespace aggrik8s::test
