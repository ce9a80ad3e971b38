#pragma once
// The threads TFTP transfers send their files from, each with its own io_context. A read request is
// parsed, remapped, checked and opened on the server's io_context (the thread `serve` runs DHCP, HTTP
// and the node inventory on); from then on a transfer needs only its open file and its own socket, so
// its blocks, ACKs and timers move to one of these threads. One thread serving twenty lockstep clients
// was the limit on a 2-core machine (0.67x tftpd-hpa, which forks a process per transfer): the clients
// and the server compete for the same cores, and a single server thread gets one runnable task's share.
#include "netboot/asio.hpp"

#include <atomic>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace aggrik8s::netboot {

class TftpTransferThreads {
 public:
  // Starts `count` threads (at least one) with every signal blocked, so signals reach the thread that
  // runs the caller's io_context and its signal_set.
  explicit TftpTransferThreads(unsigned count);
  // Lets each io_context run out of work (transfers in flight finish or are aborted first) and joins.
  // The object stays usable for release() while and after it joins: a transfer ending on its thread
  // still counts itself out.
  void join();
  ~TftpTransferThreads() { join(); }
  TftpTransferThreads(const TftpTransferThreads&) = delete;
  TftpTransferThreads& operator=(const TftpTransferThreads&) = delete;

  // The thread with the fewest transfers; the caller counts its transfer there until it releases it.
  std::size_t acquire_least_busy();
  void release(std::size_t thread) { workers_[thread]->transfers.fetch_sub(1, std::memory_order_relaxed); }
  boost::asio::io_context& io(std::size_t thread) { return workers_[thread]->io; }
  std::size_t size() const { return workers_.size(); }

  // Threads by default: two per core, 2 to 8. On a machine shared with other work the scheduler gives
  // the server a share per runnable thread: 20 lockstep clients on 2 busy cores took 8.5 s with 4
  // threads, 9-10.5 s with 2 and 10-11.5 s with 1 (tftpd-hpa, a process per transfer: 11-13 s); 8 were
  // level with 4. An idle thread costs a sleeping epoll_wait.
  static unsigned default_count();

 private:
  struct Worker {
    boost::asio::io_context io{1};  // run by one thread: Asio keeps that thread's own handlers off the shared queue
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> keep_running{io.get_executor()};
    std::atomic<std::size_t> transfers{0};
    std::thread thread;
  };
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace aggrik8s::netboot
