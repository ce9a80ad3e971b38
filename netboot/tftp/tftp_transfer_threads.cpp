#include "netboot/tftp/tftp_transfer_threads.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>

#include "core/log.hpp"

namespace aggrik8s::netboot {

TftpTransferThreads::TftpTransferThreads(unsigned count) {
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);  // inherited by the threads started below
  try {
    for (unsigned i = 0; i < std::max(count, 1u); ++i) {
      auto worker = std::make_unique<Worker>();
      Worker& started = *worker;
      worker->thread = std::thread([&started] {
        // A transfer's own errors are caught in its coroutine; anything escaping is a bug, but must not
        // take the thread (and every transfer still queued on it) down silently.
        while (true) {
          try {
            started.io.run();
            return;
          } catch (const std::exception& e) {
            log::error("tftp: transfer thread: ", e.what());
          }
        }
      });
      workers_.push_back(std::move(worker));
    }
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    join();
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void TftpTransferThreads::join() {
  for (auto& worker : workers_) worker->keep_running.reset();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
}

std::size_t TftpTransferThreads::acquire_least_busy() {
  std::size_t best = 0;
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    if (workers_[i]->transfers.load(std::memory_order_relaxed) < workers_[best]->transfers.load(std::memory_order_relaxed)) {
      best = i;
    }
  }
  workers_[best]->transfers.fetch_add(1, std::memory_order_relaxed);
  return best;
}

unsigned TftpTransferThreads::default_count() { return std::clamp(2 * std::thread::hardware_concurrency(), 2u, 8u); }

}  // namespace aggrik8s::netboot
