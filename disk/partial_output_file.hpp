#pragma once
// `<output>.partial` while an archive is being written, renamed to `<output>` once it is complete and
// on disk, and removed on every other way out (an exception, a crash of the writer's own logic): so
// `<output>` is never a half-written file, and nothing half-written is left beside it.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"

namespace aggrik8s {

class PartialOutputFile {
 public:
  explicit PartialOutputFile(std::filesystem::path output)
      : output_(std::move(output)), partial_(output_.string() + ".partial") {}
  ~PartialOutputFile() {
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove(partial_, ignored);
    }
  }
  PartialOutputFile(const PartialOutputFile&) = delete;
  PartialOutputFile& operator=(const PartialOutputFile&) = delete;

  const std::filesystem::path& path() const { return partial_; }

  // fdatasync, then rename: after a crash the name holds either the old file or the whole new one.
  void commit() {
    {
      FileDescriptor fd(::open(partial_.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_system_error("cannot open " + partial_.string() + " to flush it", errno);
      if (::fdatasync(fd.get()) != 0) throw_system_error("cannot flush " + partial_.string() + " to disk", errno);
    }
    std::error_code ec;
    std::filesystem::rename(partial_, output_, ec);
    if (ec) throw Error("cannot rename " + partial_.string() + " to " + output_.string() + ": " + ec.message());
    committed_ = true;
  }

 private:
  std::filesystem::path output_;
  std::filesystem::path partial_;
  bool committed_ = false;
};

}  // namespace aggrik8s
