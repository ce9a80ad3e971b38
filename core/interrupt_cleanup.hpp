#pragma once
// Files and directories a command is in the middle of writing, removed if it is interrupted (SIGINT,
// SIGTERM, SIGHUP, or SIGPIPE: its output piped into `head` or a pager that quit) before it renames
// them into place or removes them itself: a build stopped with Ctrl-C leaves no 300 MB ".partial"
// image, no work directory, and inspect no decompressed copy of an image (which may hold a join
// token) in /tmp.
//
// install() sets a handler that only writes the signal's number to a pipe (all a handler may safely
// do); a thread reading the pipe removes what is registered and ends the process with 128 + the signal
// number, as a shell reports a process killed by it. The handler is replaced by the default in child
// processes at exec, so mksquashfs, xz or qemu still stop on Ctrl-C as before. Commands that handle
// signals themselves (serve) do not install it.
#include <cstdint>
#include <filesystem>
#include <functional>

namespace aggrik8s {

class InterruptCleanup {
 public:
  // Once per process; later calls do nothing.
  static void install();
  // `path` (a file or a directory tree) is removed on an interrupt until forget() is called with the
  // returned registration. Registering without install() is allowed and does nothing on interrupt.
  static std::uint64_t remove_on_interrupt(std::filesystem::path path);
  // The same, then `previous` (what `path` was before a build replaced it, kept under another name)
  // is renamed back to `path`: an interrupted rebuild leaves the earlier build's file, not a gap.
  static std::uint64_t restore_on_interrupt(std::filesystem::path path, std::filesystem::path previous);
  static void forget(std::uint64_t registration);
  // Runs `step` with an interrupt's cleanup held off until it returns: a signal that comes meanwhile is
  // acted on after it, on what is still registered then. For the step that renames a build's record
  // into place and forgets its outputs, so an interrupt leaves the whole build or none of it (not a new
  // SHA256SUMS beside removed images). `step` may register and forget; keep it short.
  static void hold_off(const std::function<void()>& step);
};

// remove_on_interrupt() (with `previous`: restore_on_interrupt()) for as long as it lives.
class RemovedOnInterrupt {
 public:
  explicit RemovedOnInterrupt(std::filesystem::path path) : registration_(InterruptCleanup::remove_on_interrupt(std::move(path))) {}
  RemovedOnInterrupt(std::filesystem::path path, std::filesystem::path previous)
      : registration_(InterruptCleanup::restore_on_interrupt(std::move(path), std::move(previous))) {}
  ~RemovedOnInterrupt() { InterruptCleanup::forget(registration_); }
  RemovedOnInterrupt(const RemovedOnInterrupt&) = delete;
  RemovedOnInterrupt& operator=(const RemovedOnInterrupt&) = delete;

 private:
  std::uint64_t registration_;
};

}  // namespace aggrik8s
