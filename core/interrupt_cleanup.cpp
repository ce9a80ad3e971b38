#include "core/interrupt_cleanup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

namespace aggrik8s {
namespace {

// Recursive: hold_off() keeps it while its step registers and forgets paths.
std::recursive_mutex registered_mutex;
struct Registered {
  std::filesystem::path path;
  std::filesystem::path previous;  // empty: nothing to restore
};
std::map<std::uint64_t, Registered>& registered() {
  static std::map<std::uint64_t, Registered> paths;
  return paths;
}
std::uint64_t next_registration = 1;
int signal_pipe[2] = {-1, -1};

extern "C" void write_signal_number(int signal) {
  int saved = errno;
  unsigned char number = static_cast<unsigned char>(signal);
  [[maybe_unused]] ssize_t written = ::write(signal_pipe[1], &number, 1);
  errno = saved;
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE (the pipe its output went to was closed)";
  }
  return "a signal";
}

// Removes `path` (a file or a tree) that the interrupted command's other threads may still be writing
// into until the process ends: a tree is first renamed aside, so a file created under its old name
// meanwhile fails instead of landing in a directory remove_all has already listed (which left a
// build's work directory behind, holding a new file, when Ctrl-C came while a node's work files were
// being written).
bool remove_while_written(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::path aside = path;
  aside += ".interrupted-" + std::to_string(::getpid());
  std::filesystem::path target = path;
  if (std::filesystem::is_directory(std::filesystem::symlink_status(path, ec))) {
    std::filesystem::rename(path, aside, ec);
    if (!ec) target = aside;
  }
  std::uintmax_t removed = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {  // a file opened before the rename may still appear
    std::uintmax_t n = std::filesystem::remove_all(target, ec);
    if (n != static_cast<std::uintmax_t>(-1)) removed += n;
    if (!std::filesystem::exists(std::filesystem::symlink_status(target, ec))) break;
  }
  return removed > 0;
}

void remove_registered_and_exit() {
  unsigned char signal = 0;
  while (::read(signal_pipe[0], &signal, 1) != 1) {
    if (errno != EINTR) return;  // the pipe broke: interrupts are simply not cleaned up after
  }
  std::size_t removed = 0;
  // Held until the process ends: a path registered from now on would be one this loop never saw, and
  // the thread registering it waits here instead of creating it. Registrations come in order, so an
  // output renamed into place (PartialOutputs::publish: its final name registered first, then the
  // rename) is found under one of its names.
  registered_mutex.lock();
  for (const auto& [registration, entry] : registered()) {
    if (remove_while_written(entry.path)) ++removed;
    std::error_code ec;
    if (!entry.previous.empty()) std::filesystem::rename(entry.previous, entry.path, ec);
  }
  std::fprintf(stderr, "\ninterrupted by %s: removed %zu unfinished output%s\n", signal_name(signal), removed,
               removed == 1 ? "" : "s");
  std::_Exit(128 + signal);
}

}  // namespace

void InterruptCleanup::install() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (::pipe2(signal_pipe, O_CLOEXEC) != 0) return;  // interrupts then end the process as before
    std::thread(remove_registered_and_exit).detach();
    struct sigaction action {};
    action.sa_handler = write_signal_number;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    // SIGPIPE too: its default also ends the process without a word, and `build ... | head` (or a
    // pager quit early) did so at the next log line, leaving the work directory behind. Commands
    // install this handler only where no socket or child's pipe is written without MSG_NOSIGNAL
    // (children's standard input is /dev/null; libcurl sends with MSG_NOSIGNAL).
    for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::sigaction(signal, &action, nullptr);
  });
}

std::uint64_t InterruptCleanup::remove_on_interrupt(std::filesystem::path path) {
  return restore_on_interrupt(std::move(path), {});
}

std::uint64_t InterruptCleanup::restore_on_interrupt(std::filesystem::path path, std::filesystem::path previous) {
  std::lock_guard lock(registered_mutex);
  std::uint64_t registration = next_registration++;
  registered().emplace(registration, Registered{std::move(path), std::move(previous)});
  return registration;
}

void InterruptCleanup::hold_off(const std::function<void()>& step) {
  std::lock_guard lock(registered_mutex);
  step();
}

void InterruptCleanup::forget(std::uint64_t registration) {
  std::lock_guard lock(registered_mutex);
  registered().erase(registration);
}

}  // namespace aggrik8s
