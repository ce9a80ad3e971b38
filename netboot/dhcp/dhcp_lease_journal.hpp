#pragma once
// The lease file's writer: a thread of its own that appends lease lines (dhcp_lease_pool.hpp's
// format) and fdatasyncs them, so that the DHCP server's io thread keeps receiving and answering
// (OFFERs, NAKs, INFORMs need no disk) while the disk is slow. Group commit: every batch queued while
// one sync runs goes to disk with the next single write + fdatasync.
// Knows nothing of DHCP packets or sockets: it takes text and says, through a callback on its own
// thread, up to which ticket the text is on disk.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/file_descriptor.hpp"

namespace aggrik8s::netboot {

struct DhcpJournalResult {
  std::uint64_t through = 0;  // every append with a ticket <= this one is settled
  bool durable = false;       // false: written or not, these lines must not be relied on (no ACK)
  std::string error;          // when not durable: what failed, naming the file
  bool compaction = false;    // the result of a compact() (through is 0), not of appends
};

class DhcpLeaseJournal {
 public:
  // Called on the journal's thread once per group of appends and once per compaction; it must not
  // wait for the thread that calls append() (post to it instead).
  using Settled = std::function<void(const DhcpJournalResult&)>;

  // Writes `initial_text` as the whole file (write_dhcp_lease_file) and opens it for appending, on the
  // caller's thread: a lease file that cannot be written stops the server at start. Then starts the
  // thread. `before_sync` (tests only) runs on that thread before each fdatasync of appended lines.
  DhcpLeaseJournal(std::filesystem::path file, const std::string& initial_text, Settled settled,
                   std::function<void()> before_sync = {});
  // Writes and syncs what is still queued (its callbacks still run), then stops the thread.
  ~DhcpLeaseJournal();
  DhcpLeaseJournal(const DhcpLeaseJournal&) = delete;
  DhcpLeaseJournal& operator=(const DhcpLeaseJournal&) = delete;

  // Queues lines for appending; returns their ticket (1, 2, 3, ... in call order). Lines reach the
  // file in the order they were queued, so the file is always a prefix of what was queued.
  std::uint64_t append(std::string lines);
  // Queues a rewrite of the whole file with `text`, in order with the appends: everything queued
  // before it is synced first, so `text` (the pool's state when it was queued) supersedes it. After a
  // failed append, appends are refused (settled as not durable) until a compaction succeeds: the owner
  // answers a failed result with compact() of its current state.
  void compact(std::string text);

  std::uint64_t appends() const { return appends_; }        // groups appended and fdatasync'ed
  std::uint64_t compactions() const { return compactions_; }
  const std::filesystem::path& file() const { return file_; }

 private:
  struct Job {
    std::uint64_t ticket = 0;  // 0: a compaction
    std::string text;
  };
  void run();
  void write_group(const std::string& lines, std::uint64_t through);
  bool rewrite(const std::string& text, std::string& error);

  std::filesystem::path file_;
  Settled settled_;
  std::function<void()> before_sync_;
  int fd_ = -1;             // the lease file, open for appending; only the thread touches it once started
  std::uint64_t size_ = 0;  // bytes known to be in the file, to cut off a failed append's partial line
  bool broken_ = false;     // an append failed: appends are refused until a compaction succeeds
  std::atomic<std::uint64_t> appends_{0}, compactions_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  std::uint64_t next_ticket_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

// Writes the leases durably: temp file, fsync, rename over `file`, fsync of the directory.
void write_dhcp_lease_file(const std::filesystem::path& file, const std::string& text);

// One server per lease file: an exclusive flock on `<file>.lock` (created 0600 beside it; the lease
// file itself is replaced by renames, so a lock on it would not outlive the first compaction), held
// while the returned descriptor is open and dropped by the kernel when the process ends, however it
// ends. A second `serve` started with the same configuration used to run beside the first: it
// rewrote the lease file, so the first went on appending the leases it acknowledged to a deleted
// file (lost at its next start), and each handed out addresses the other had leased. Waits up to
// `patience` for a server that is still shutting down, then throws Error naming the file. Where the
// filesystem cannot lock, a warning, and the server goes on unlocked (the descriptor is then closed).
FileDescriptor lock_dhcp_lease_file(const std::filesystem::path& file, std::chrono::milliseconds patience);

}  // namespace aggrik8s::netboot
