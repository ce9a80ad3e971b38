#include "core/progress.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <deque>
#include <mutex>
#include <vector>

#include "core/byte_size.hpp"
#include "core/log.hpp"
#include "core/terminal.hpp"

namespace aggrik8s {

using Clock = std::chrono::steady_clock;

namespace {
std::atomic<ProgressMode> configured_mode{ProgressMode::automatic};
// ProgressMode::lines prints at most one line per task this often: enough for a CI log to show life.
constexpr std::chrono::milliseconds line_interval{5000};
}  // namespace

struct ProgressTask::State {
  std::string label;
  std::optional<std::uint64_t> total;
  std::uint64_t done = 0;
  Clock::time_point started = Clock::now();
  Clock::time_point last_line = Clock::now();
  std::deque<std::pair<Clock::time_point, std::uint64_t>> samples;  // for the recent rate
  bool finished = false;

  double rate(Clock::time_point now) {
    samples.emplace_back(now, done);
    // Rate over the last 3 seconds: responsive to stalls, steady enough to read.
    while (samples.size() > 2 && now - samples.front().first > std::chrono::seconds(3)) samples.pop_front();
    double seconds = std::chrono::duration<double>(now - samples.front().first).count();
    if (seconds < 0.2) {
      seconds = std::chrono::duration<double>(now - started).count();
      return seconds > 0 ? static_cast<double>(done) / seconds : 0;
    }
    return static_cast<double>(done - samples.front().second) / seconds;
  }
};

namespace {

ProgressMode effective_mode() {
  ProgressMode mode = configured_mode.load();
  if (mode != ProgressMode::automatic) return mode;
  if (!log::enabled(log::Level::info)) return ProgressMode::off;
  return terminal::is_tty(stderr) ? ProgressMode::terminal : ProgressMode::lines;
}

// The terminal shows one status line for all running tasks: the oldest task, plus a count of others.
class ProgressBoard {
 public:
  static ProgressBoard& instance() {
    static ProgressBoard board;
    return board;
  }
  void add(const std::shared_ptr<ProgressTask::State>& task) {
    std::lock_guard lock(mutex_);
    tasks_.push_back(task);
  }
  void remove(const ProgressTask::State* task) {
    std::lock_guard lock(mutex_);
    std::erase_if(tasks_, [&](const auto& t) { return t.get() == task; });
    if (tasks_.empty()) terminal::set_status("");
  }
  void update(ProgressTask::State& task, bool force) {
    std::lock_guard lock(mutex_);
    auto now = Clock::now();
    ProgressMode mode = effective_mode();
    if (mode == ProgressMode::terminal) {
      if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      draw(now);
    } else if (mode == ProgressMode::lines) {
      if (!force && now - task.last_line < line_interval) return;
      task.last_line = now;
      double rate = task.rate(now);
      std::string line = task.label + ": " + format_byte_size(task.done);
      if (task.total && *task.total > 0) {
        line += " of " + format_byte_size(*task.total) + " (" +
                std::to_string(task.done * 100 / *task.total) + "%)";
      }
      line += ", " + format_byte_size(static_cast<std::uint64_t>(rate)) + "/s";
      if (task.total && rate > 0 && task.done < *task.total) {
        line += ", ETA " + format_duration(static_cast<double>(*task.total - task.done) / rate);
      }
      log::info(line);
    }
  }

 private:
  void draw(Clock::time_point now) {
    if (tasks_.empty()) return;
    auto& first = *tasks_.front();
    std::string label = first.label;
    if (tasks_.size() > 1) label += " (+" + std::to_string(tasks_.size() - 1) + " more)";
    terminal::set_status(format_progress(label, first.done, first.total, first.rate(now), terminal::width() - 1));
  }

  std::mutex mutex_;
  std::vector<std::shared_ptr<ProgressTask::State>> tasks_;
  Clock::time_point last_draw_{};
};

}  // namespace

void set_progress_mode(ProgressMode mode) { configured_mode = mode; }
ProgressTask::ProgressTask(std::string label, std::optional<std::uint64_t> total)
    : state_(std::make_shared<State>()) {
  state_->label = std::move(label);
  state_->total = total;
  if (effective_mode() != ProgressMode::off) ProgressBoard::instance().add(state_);
}

ProgressTask::~ProgressTask() { finish(true); }

void ProgressTask::add(std::uint64_t bytes) {
  state_->done += bytes;
  if (effective_mode() != ProgressMode::off) ProgressBoard::instance().update(*state_, false);
}

void ProgressTask::set_done(std::uint64_t bytes) {
  state_->done = bytes;
  if (effective_mode() != ProgressMode::off) ProgressBoard::instance().update(*state_, false);
}

void ProgressTask::set_total(std::uint64_t total) { state_->total = total; }

void ProgressTask::finish(bool quietly) {
  if (state_->finished) return;
  state_->finished = true;
  ProgressBoard::instance().remove(state_.get());
  if (quietly || effective_mode() == ProgressMode::off) return;
  double seconds = std::chrono::duration<double>(Clock::now() - state_->started).count();
  std::string line = state_->label + ": " + format_byte_size(state_->done) + " in " + format_duration(seconds);
  if (seconds > 0.01) line += ", " + format_byte_size(static_cast<std::uint64_t>(static_cast<double>(state_->done) / seconds)) + "/s";
  log::info(line);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char out[32];
  if (seconds < 10) {
    std::snprintf(out, sizeof out, "%.1f s", seconds);
  } else {
    auto total = static_cast<long long>(std::llround(seconds));
    if (total >= 3600) {
      std::snprintf(out, sizeof out, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
    } else {
      std::snprintf(out, sizeof out, "%lld:%02lld", total / 60, total % 60);
    }
  }
  return out;
}

std::string format_progress(const std::string& label, std::uint64_t done, std::optional<std::uint64_t> total,
                            double bytes_per_second, std::size_t width) {
  std::string tail = "  " + format_byte_size(done);
  std::string bar;
  if (total && *total > 0) {
    double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(*total));
    tail += " / " + format_byte_size(*total);
    constexpr std::size_t bar_width = 24;
    auto filled = static_cast<std::size_t>(fraction * bar_width);
    bar = "[" + std::string(filled, '=') + (filled < bar_width ? ">" : "") +
          std::string(bar_width - std::min(bar_width, filled + 1), ' ') + "] ";
    char percent[8];
    std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(fraction * 100));
    bar += percent;
  }
  tail += "  " + format_byte_size(static_cast<std::uint64_t>(std::max(0.0, bytes_per_second))) + "/s";
  if (total && bytes_per_second > 0 && done < *total) {
    tail += "  ETA " + format_duration(static_cast<double>(*total - done) / bytes_per_second);
  }
  std::string line = label + " " + bar + tail;
  if (line.size() > width) {
    std::size_t keep = width > bar.size() + tail.size() + 4 ? width - bar.size() - tail.size() - 4 : 8;
    line = label.substr(0, keep) + "… " + bar + tail;
  }
  return line;
}

}  // namespace aggrik8s
