#include "core/permission_detail.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s {
namespace {

std::string user_text(uid_t uid) {
  std::string text = "uid " + std::to_string(uid);
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    text += " (" + std::string(found->pw_name) + ")";
  }
  return text;
}

std::string group_text(gid_t gid) {
  std::string text = "group " + std::to_string(gid);
  std::vector<char> buffer(16384);
  group entry{};
  group* found = nullptr;
  if (::getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    text += " (" + std::string(found->gr_name) + ")";
  }
  return text;
}

std::string owner_text(const struct stat& info) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info.st_mode & 07777));
  return "owned by " + user_text(info.st_uid) + ", " + group_text(info.st_gid) + ", mode " + mode;
}

}  // namespace

std::string permission_denied_detail(const std::filesystem::path& path, int err) {
  if (err != EACCES && err != EPERM) return {};
  const std::string self = "this process runs as " + user_text(::geteuid());
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0) {
    return " (" + self + "; " + path.string() + " is " + owner_text(info) + ")";
  }
  if (errno != EACCES) return {};
  // A directory on the way cannot be searched: name the first one, walking down from the start.
  std::filesystem::path walked = path.is_absolute() ? path.root_path() : std::filesystem::path(".");
  for (const auto& part : path.relative_path().parent_path()) {
    walked /= part;
    if (::faccessat(AT_FDCWD, walked.c_str(), X_OK, AT_EACCESS) != 0 && errno == EACCES) {  // as the effective user
      struct stat directory {};
      if (::stat(walked.c_str(), &directory) != 0) return {};
      return " (" + self + " and cannot enter " + walked.lexically_normal().string() + ", " + owner_text(directory) + ")";
    }
  }
  return {};
}

void throw_file_error(const std::string& what, const std::filesystem::path& path, int err) {
  throw Error(what + ": " + std::strerror(err) + permission_denied_detail(path, err));
}

}  // namespace aggrik8s
