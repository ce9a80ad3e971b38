#pragma once
// Progress of long work (download, decompress, compress, write). On a terminal: one status line with a
// bar, rate and ETA, redrawn at most 10 times a second. Otherwise (CI, journald, pipes): a plain log
// line per task every few seconds, and one when it ends, so logs stay readable.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace aggrik8s {

enum class ProgressMode { automatic, terminal, lines, off };
void set_progress_mode(ProgressMode mode);

class ProgressTask {
 public:
  ProgressTask(std::string label, std::optional<std::uint64_t> total);
  ~ProgressTask();
  ProgressTask(const ProgressTask&) = delete;
  ProgressTask& operator=(const ProgressTask&) = delete;

  void add(std::uint64_t bytes);
  void set_done(std::uint64_t bytes);
  void set_total(std::uint64_t total);
  // Ends the task; prints a summary line ("label: 265 MiB in 7.5 s, 35.3 MiB/s") unless `quietly`.
  void finish(bool quietly = false);

  struct State;  // shared with the board that draws it

 private:
  std::shared_ptr<State> state_;
};

// Pure formatting, unit-tested: "[=====>    ]  45%  120 MiB / 265 MiB  35.2 MiB/s  ETA 0:04".
std::string format_progress(const std::string& label, std::uint64_t done, std::optional<std::uint64_t> total,
                            double bytes_per_second, std::size_t width);
std::string format_duration(double seconds);

}  // namespace aggrik8s
