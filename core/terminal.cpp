#include "core/terminal.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <mutex>

namespace aggrik8s::terminal {
namespace {
std::mutex output_mutex;
std::string status_line;  // what is drawn on stderr after the last newline

void clear_status_locked() {
  if (!status_line.empty()) {
    std::fputs("\r\033[K", stderr);
  }
}
void redraw_status_locked() {
  if (!status_line.empty()) {
    std::fputs(status_line.c_str(), stderr);
  }
}
}  // namespace

bool is_tty(std::FILE* stream) { return ::isatty(::fileno(stream)) == 1; }

std::size_t width() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col >= 40) return size.ws_col;
  return 100;
}

void print_line(std::FILE* stream, const std::string& line) {
  std::lock_guard lock(output_mutex);
  clear_status_locked();
  std::fputs(line.c_str(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
  redraw_status_locked();
  std::fflush(stderr);
}

void set_status(const std::string& status) {
  std::lock_guard lock(output_mutex);
  clear_status_locked();
  status_line = status;
  redraw_status_locked();
  std::fflush(stderr);
}

}  // namespace aggrik8s::terminal
