#include "netboot/dhcp/dhcp_lease_journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.hpp"
#include "core/positional_io.hpp"
#include "core/log.hpp"

namespace aggrik8s::netboot {

namespace {

void write_all(int fd, const std::string& text, const std::filesystem::path& file) {
  aggrik8s::write_all(fd, text.data(), text.size(), file.string());
}

}  // namespace

namespace {

// Steps of write_dhcp_lease_file, split so the journal knows whether the rename happened (after it, its
// descriptor points at the replaced file and must be reopened whatever else failed).
std::filesystem::path write_synced_temp(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::path temp = file;
  temp += ".tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_system_error("creating " + temp.string(), errno);
  try {
    write_all(fd, text, temp);
  } catch (...) {
    ::close(fd);
    throw;
  }
  // The new file's data must be on disk before its name replaces the old one: else a power loss right
  // after the rename could leave an empty or partial lease file in its place.
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    throw_system_error("fsync of " + temp.string(), err);
  }
  ::close(fd);
  return temp;
}

// The rename itself must be durable too, or a power loss could bring back the old file, without the
// lines appended to the new one since (acknowledged leases). A failure here is reported, not ignored.
void sync_directory_of(const std::filesystem::path& file) {
  auto directory = file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path();
  int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) throw_system_error("opening directory " + directory.string() + " to sync the rename of " + file.string(), errno);
  if (::fsync(dir) != 0) {
    int err = errno;
    ::close(dir);
    throw_system_error("fsync of directory " + directory.string() + " after renaming " + file.string(), err);
  }
  ::close(dir);
}

void rename_over(const std::filesystem::path& temp, const std::filesystem::path& file) {
  if (::rename(temp.c_str(), file.c_str()) != 0) throw_system_error("renaming " + temp.string() + " to " + file.string(), errno);
}

}  // namespace

void write_dhcp_lease_file(const std::filesystem::path& file, const std::string& text) {
  rename_over(write_synced_temp(file, text), file);
  sync_directory_of(file);
}

DhcpLeaseJournal::DhcpLeaseJournal(std::filesystem::path file, const std::string& initial_text, Settled settled,
                                   std::function<void()> before_sync)
    : file_(std::move(file)), settled_(std::move(settled)), before_sync_(std::move(before_sync)) {
  std::string error;
  if (!rewrite(initial_text, error)) {
    if (fd_ >= 0) ::close(fd_);
    throw Error(error);
  }
  thread_ = std::thread([this] { run(); });
}

DhcpLeaseJournal::~DhcpLeaseJournal() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

std::uint64_t DhcpLeaseJournal::append(std::string lines) {
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(mutex_);
    ticket = next_ticket_++;
    queue_.push_back({ticket, std::move(lines)});
  }
  wake_.notify_one();
  return ticket;
}

void DhcpLeaseJournal::compact(std::string text) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back({0, std::move(text)});
  }
  wake_.notify_one();
}

void DhcpLeaseJournal::run() {
  std::deque<Job> jobs;
  std::string lines;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued is settled
      jobs.swap(queue_);
    }
    // Group commit: all the appends queued while the last sync ran go out with one write and one
    // fdatasync; a compaction splits the group so the order of the file stays the order of the queue.
    lines.clear();
    std::uint64_t through = 0;
    for (auto& job : jobs) {
      if (job.ticket == 0) {
        if (through != 0) write_group(lines, through);
        lines.clear();
        through = 0;
        DhcpJournalResult result;
        result.compaction = true;
        result.durable = rewrite(job.text, result.error);
        settled_(result);
        continue;
      }
      lines += job.text;
      through = job.ticket;
    }
    if (through != 0) write_group(lines, through);
    jobs.clear();
  }
}

void DhcpLeaseJournal::write_group(const std::string& lines, std::uint64_t through) {
  DhcpJournalResult result;
  result.through = through;
  try {
    // After a failed append the file no longer ends where the queue says (a line may be missing, a
    // tombstone among them), so nothing more is appended until a compaction rewrites it from the pool:
    // the file stays a prefix of what was queued, which replays to a state the pool really was in.
    if (broken_) throw Error("not appending to " + file_.string() + " after an earlier failure until it is rewritten");
    write_all(fd_, lines, file_);
    if (before_sync_) before_sync_();
    if (::fdatasync(fd_) != 0) throw_system_error("fdatasync of " + file_.string(), errno);
    size_ += lines.size();
    ++appends_;
    result.durable = true;
  } catch (const std::exception& e) {
    if (!broken_ && fd_ >= 0 && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
      log::warning("dhcp: could not cut the failed append off ", file_.string(), ": ", std::strerror(errno));
    }
    broken_ = true;
    result.error = e.what();
  }
  settled_(result);
}

bool DhcpLeaseJournal::rewrite(const std::string& text, std::string& error) {
  try {
    rename_over(write_synced_temp(file_, text), file_);
  } catch (const std::exception& e) {
    error = e.what();  // the old file is still there and still open: appends go on
    return false;
  }
  // From here the old descriptor points at the replaced file (appends to it would be lost with it):
  // it is reopened whatever happens next, and a failure to reopen or to make the rename durable leaves
  // the journal broken (appends refused, no ACKs) until a later compaction succeeds.
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(file_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) {
    broken_ = true;
    error = "opening " + file_.string() + " for appending: " + std::strerror(errno);
    return false;
  }
  size_ = text.size();
  try {
    sync_directory_of(file_);
  } catch (const std::exception& e) {
    broken_ = true;
    error = e.what();
    return false;
  }
  broken_ = false;
  ++compactions_;
  return true;
}

FileDescriptor lock_dhcp_lease_file(const std::filesystem::path& file, std::chrono::milliseconds patience) {
  const std::string name = file.string() + ".lock";
  FileDescriptor fd(::open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_system_error("dhcp: cannot open " + name + " (the lock of the lease file " + file.string() + ")", errno);
  const auto give_up = std::chrono::steady_clock::now() + patience;
  bool told = false;
  for (;;) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return fd;
    if (errno != EWOULDBLOCK) {
      log::warning("dhcp: cannot lock ", name, " (", std::strerror(errno), "): nothing stops a second server from using ",
                   file.string(), " too");
      return {};
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      throw Error("dhcp: " + file.string() + " is the lease file of another DHCP server running on this machine (its lock " +
                  name + " is held): two servers with one lease file give addresses twice and lose leases; stop the "
                  "other one, or give this one a dhcp.lease_file of its own");
    }
    if (!told) {
      log::info("dhcp: waiting for the server holding ", name, " to end");
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace aggrik8s::netboot
