// The libguestfs functions the deep check calls, defined here and forwarded to libguestfs.so.0, which
// is loaded with dlopen on the first call instead of being linked into the binary.
//
// Why: every command paid for loading libguestfs and what only it pulls in (libvirt, glib, gnutls,
// ICU...: 20 of the binary's 77 shared libraries) at each start, although only `inspect --deep` uses
// it. On this 2-core VM an empty program linked against all 77 started in 0.09-0.15 s, without these
// 20 in 0.04-0.07 s: a twelfth of a 0.65 s `flash` of a small image (docs/benchmarks.md, Flash,
// 2026-12-05).
//
// The binary is not linked with libguestfs, so these definitions are the only ones it has; a call of a
// guestfs_* function not listed here fails to link ("undefined reference"): add it below. Inside
// libguestfs nothing sees them (an executable exports no symbols a library did not ask for at link
// time), and dlsym on the library's own handle finds the library's definitions, never these.
#include <dlfcn.h>
#include <guestfs.h>

#include <cstdarg>
#include <string>

#include "core/error.hpp"

namespace {

void* libguestfs() {
  // Initialised once; a failed dlopen throws and the next call tries again.
  static void* handle = [] {
    void* loaded = ::dlopen("libguestfs.so.0", RTLD_NOW | RTLD_LOCAL);
    if (loaded == nullptr) {
      const char* why = ::dlerror();
      throw aggrik8s::Error(std::string("cannot load libguestfs.so.0 (") + (why != nullptr ? why : "unknown error") +
                            "): the deep check needs libguestfs (Debian: apt install libguestfs0)");
    }
    return loaded;
  }();
  return handle;
}

template <typename Function>
Function* resolve(const char* name) {
  void* symbol = ::dlsym(libguestfs(), name);
  if (symbol == nullptr) throw aggrik8s::Error(std::string("libguestfs.so.0 has no ") + name + " (too old a libguestfs?)");
  return reinterpret_cast<Function*>(symbol);
}

}  // namespace

// One definition per function: resolved on its first call, then called directly.
#define AGGRIK8S_GUESTFS_FORWARD(result, name, parameters, arguments)  \
  extern "C" result name parameters {                                  \
    static auto* const real = resolve<decltype(::name)>(#name);        \
    return real arguments;                                             \
  }

AGGRIK8S_GUESTFS_FORWARD(guestfs_h*, guestfs_create, (void), ())
AGGRIK8S_GUESTFS_FORWARD(void, guestfs_close, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(const char*, guestfs_last_error, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(void, guestfs_set_error_handler, (guestfs_h * g, guestfs_error_handler_cb cb, void* opaque),
                         (g, cb, opaque))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_set_backend_settings, (guestfs_h * g, char* const* settings), (g, settings))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_get_backend, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_launch, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_shutdown, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(char**, guestfs_list_partitions, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_mount_ro, (guestfs_h * g, const char* mountable, const char* mountpoint),
                         (g, mountable, mountpoint))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_umount_all, (guestfs_h * g), (g))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_fsck, (guestfs_h * g, const char* fstype, const char* device), (g, fstype, device))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_vfs_label, (guestfs_h * g, const char* mountable), (g, mountable))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_vfs_type, (guestfs_h * g, const char* mountable), (g, mountable))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_vfs_uuid, (guestfs_h * g, const char* mountable), (g, mountable))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_exists, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_is_dir, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_is_file, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(int, guestfs_is_symlink, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(char**, guestfs_ls, (guestfs_h * g, const char* directory), (g, directory))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_read_file, (guestfs_h * g, const char* path, size_t* size_r), (g, path, size_r))
AGGRIK8S_GUESTFS_FORWARD(char*, guestfs_readlink, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(struct guestfs_statns*, guestfs_statns, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(struct guestfs_statns*, guestfs_lstatns, (guestfs_h * g, const char* path), (g, path))
AGGRIK8S_GUESTFS_FORWARD(void, guestfs_free_statns, (struct guestfs_statns * statns), (statns))

// The two with optional arguments: libguestfs exports a va_list form of each (name_va).
#define AGGRIK8S_GUESTFS_FORWARD_OPTIONAL_ARGUMENTS(name, second)              \
  extern "C" int name(guestfs_h* g, const char* second, ...) {                 \
    static auto* const real = resolve<decltype(::name##_va)>(#name "_va");     \
    va_list arguments;                                                         \
    va_start(arguments, second);                                               \
    int result = real(g, second, arguments);                                   \
    va_end(arguments);                                                         \
    return result;                                                             \
  }

AGGRIK8S_GUESTFS_FORWARD_OPTIONAL_ARGUMENTS(guestfs_add_drive_opts, filename)
AGGRIK8S_GUESTFS_FORWARD_OPTIONAL_ARGUMENTS(guestfs_tune2fs, device)
