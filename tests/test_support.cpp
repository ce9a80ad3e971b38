#include "tests/test_support.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace aggrik8s::test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  auto base = std::filesystem::path(AGGRIK8S_TEST_BINARY_DIR) / "test-tmp";
  std::filesystem::create_directories(base);
  path_ = base / ("t" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  if (std::getenv("AGGRIK8S_KEEP_TEST_DIRS") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out) throw std::runtime_error("test: cannot write " + path.string());
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test: cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

StderrToFile::StderrToFile(std::filesystem::path file) : file_(std::move(file)) {
  std::fflush(stderr);
  int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("test: cannot create " + file_.string());
  saved_ = ::dup(2);
  ::dup2(fd, 2);
  ::close(fd);
}

StderrToFile::~StderrToFile() {
  std::fflush(stderr);
  ::dup2(saved_, 2);
  ::close(saved_);
}

std::string StderrToFile::text() const {
  std::fflush(stderr);
  return read_file(file_);
}

CommandResult run(const std::string& command_line) {
  CommandResult result;
  std::string full = "(" + command_line + ") 2>&1 </dev/null";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("test: popen failed for " + command_line);
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::filesystem::path source_dir() { return AGGRIK8S_TEST_SOURCE_DIR; }
std::filesystem::path cli_path() { return AGGRIK8S_CLI_PATH; }

std::string random_bytes(std::size_t size, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    std::uint64_t value = generator();
    std::memcpy(out.data() + i, &value, std::min<std::size_t>(8, size - i));
  }
  return out;
}

ReflinkPlace::ReflinkPlace(const std::filesystem::path& dir) {
  auto q = [](const std::filesystem::path& path) { return "'" + path.string() + "'"; };
  if (const char* given = std::getenv("AGGRIK8S_REFLINK_TEST_DIR"); given != nullptr && *given != '\0') {
    path_ = std::filesystem::path(given) / ("reflink-" + std::to_string(::getpid()) + "-" + dir.filename().string());
    std::filesystem::create_directories(path_);
    owned_dir_ = true;
    return;
  }
  if (::geteuid() != 0) return;
  std::filesystem::create_directories(dir / "xfs");
  const auto made = run("truncate -s 512M " + q(dir / "xfs.raw") + " && mkfs.xfs -q " + q(dir / "xfs.raw") +
                        " && mount -o loop " + q(dir / "xfs.raw") + " " + q(dir / "xfs") + " 2>&1");
  if (made.exit_code != 0) {
    reason_ = made.output;
    return;
  }
  mounted_ = dir / "xfs";
  path_ = mounted_;
}

ReflinkPlace::~ReflinkPlace() {
  if (!mounted_.empty()) run("umount '" + mounted_.string() + "' 2>&1");
  if (owned_dir_) {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
}

}  // namespace aggrik8s::test
