#include "core/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s {

void replace_file_durably(const std::filesystem::path& file, const std::string& text, mode_t mode) {
  std::filesystem::path temp = file;
  temp += ".tmp";
  {
    FileDescriptor fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) throw_system_error("creating " + temp.string(), errno);
    try {
      // A leftover temporary file keeps its old mode through O_CREAT: set the one asked for.
      if (::fchmod(fd.get(), mode) != 0) throw_system_error("setting the mode of " + temp.string(), errno);
      write_all(fd.get(), text.data(), text.size(), temp.string());
      if (::fsync(fd.get()) != 0) throw_system_error("fsync of " + temp.string(), errno);
    } catch (...) {
      ::unlink(temp.c_str());
      throw;
    }
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    throw_system_error("renaming " + temp.string() + " to " + file.string(), err);
  }
  auto directory = file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path();
  FileDescriptor dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw_system_error("opening " + directory.string() + " to sync the rename of " + file.string(), errno);
  if (::fsync(dir.get()) != 0) throw_system_error("fsync of directory " + directory.string(), errno);
}

}  // namespace aggrik8s
