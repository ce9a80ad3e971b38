// The lease journal's thread on a real file: appends settle in ticket order with one fdatasync per
// group, the file stays a prefix of what was queued, and after a failed sync nothing more is appended
// until a compaction rewrites the file.
#include "netboot/dhcp/dhcp_lease_journal.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using aggrik8s::test::TempDir;

namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Collects the results the journal's thread reports.
struct Results {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<DhcpJournalResult> seen;
  void add(const DhcpJournalResult& result) {
    std::lock_guard lock(mutex);
    seen.push_back(result);
    changed.notify_all();
  }
  std::vector<DhcpJournalResult> wait_for(std::size_t count) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, std::chrono::seconds(5), [&] { return seen.size() >= count; });
    return seen;
  }
};

}  // namespace

TEST_CASE("dhcp lease journal: appends settle in order, those queued during a sync as one group", "[dhcp]") {
  TempDir dir;
  auto file = dir.path() / "leases";
  Results results;
  std::mutex gate;
  std::unique_lock held(gate);  // the first sync waits here until the test has queued more
  bool first = true;
  DhcpLeaseJournal journal(file, "# head\n", [&](const DhcpJournalResult& r) { results.add(r); }, [&] {
    if (first) {
      first = false;
      std::lock_guard wait(gate);
    }
  });
  CHECK(read_text(file) == "# head\n");
  CHECK(journal.append("aa 10.0.0.1 100\n") == 1);
  // The thread is now inside the first group's sync (or about to be): these two queue behind it.
  CHECK(journal.append("bb 10.0.0.2 100\n") == 2);
  CHECK(journal.append("cc 10.0.0.3 100\n") == 3);
  held.unlock();
  auto seen = results.wait_for(1);
  REQUIRE(!seen.empty());
  seen = results.wait_for(seen.front().through == 3 ? 1 : 2);
  CHECK(seen.back().through == 3);
  CHECK(seen.size() < 3);  // three appends, at most two syncs: 2 and 3 waited together for the first
  for (const auto& result : seen) CHECK(result.durable);
  CHECK(journal.appends() == seen.size());
  CHECK(read_text(file) == "# head\naa 10.0.0.1 100\nbb 10.0.0.2 100\ncc 10.0.0.3 100\n");
}

TEST_CASE("dhcp lease journal: after a failed sync appends are refused until a compaction rewrites the file", "[dhcp]") {
  TempDir dir;
  auto file = dir.path() / "leases";
  Results results;
  int syncs = 0;  // only the journal's thread touches it
  DhcpLeaseJournal journal(file, "", [&](const DhcpJournalResult& r) { results.add(r); }, [&] {
    if (++syncs == 2) throw std::runtime_error("simulated fdatasync failure");
  });
  journal.append("aa 10.0.0.1 100\n");
  REQUIRE(results.wait_for(1).size() == 1);
  journal.append("bb 10.0.0.2 100\n");  // its sync fails
  auto seen = results.wait_for(2);
  REQUIRE(seen.size() == 2);
  CHECK_FALSE(seen[1].durable);
  CHECK(seen[1].through == 2);
  CHECK(seen[1].error == "simulated fdatasync failure");
  CHECK(read_text(file) == "aa 10.0.0.1 100\n");  // the failed line is cut off again
  journal.append("cc 10.0.0.3 100\n");          // refused: the file may not end where the queue says
  seen = results.wait_for(3);
  REQUIRE(seen.size() == 3);
  CHECK_FALSE(seen[2].durable);
  CHECK(seen[2].error.find("after an earlier failure") != std::string::npos);
  CHECK(read_text(file) == "aa 10.0.0.1 100\n");

  journal.compact("aa 10.0.0.1 100\nbb 10.0.0.2 100\ncc 10.0.0.3 100\n");
  journal.append("dd 10.0.0.4 100\n");
  seen = results.wait_for(5);
  REQUIRE(seen.size() == 5);
  CHECK(seen[3].compaction);
  CHECK(seen[3].durable);
  CHECK(seen[4].durable);
  CHECK(seen[4].through == 4);
  CHECK(read_text(file) == "aa 10.0.0.1 100\nbb 10.0.0.2 100\ncc 10.0.0.3 100\ndd 10.0.0.4 100\n");
  CHECK(journal.compactions() == 2);  // at start, and the rewrite
}

TEST_CASE("dhcp lease journal: a lease file that cannot be written stops the start", "[dhcp]") {
  TempDir dir;
  CHECK_THROWS_WITH(DhcpLeaseJournal(dir.path() / "missing" / "leases", "", [](const DhcpJournalResult&) {}),
                    Catch::Contains("missing/leases.tmp"));
}

TEST_CASE("dhcp lease journal: lines queued around a compaction are all in the rewritten file, in order", "[dhcp]") {
  TempDir dir;
  auto file = dir.path() / "leases";
  Results results;
  std::mutex gate;
  std::unique_lock held(gate);  // the first sync waits until everything below is queued
  bool first = true;
  DhcpLeaseJournal journal(file, "", [&](const DhcpJournalResult& r) { results.add(r); }, [&] {
    if (first) {
      first = false;
      std::lock_guard wait(gate);
    }
  });
  journal.append("aa 10.0.0.1 100\n");
  journal.append("bb 10.0.0.2 100\n");
  journal.compact("aa 10.0.0.1 100\nbb 10.0.0.2 100\n");  // the pool's state when it was queued
  journal.append("cc 10.0.0.3 100\n");                     // after it: must land in the new file
  held.unlock();
  auto seen = results.wait_for(4);
  std::uint64_t through = 0;
  for (const auto& result : seen) {
    CHECK(result.durable);
    if (!result.compaction) through = std::max(through, result.through);
  }
  REQUIRE(through == 3);
  CHECK(read_text(file) == "aa 10.0.0.1 100\nbb 10.0.0.2 100\ncc 10.0.0.3 100\n");
  CHECK_FALSE(std::filesystem::exists(dir.path() / "leases.tmp"));
}

TEST_CASE("dhcp lease journal: one server per lease file, a second is refused once the first has had time to end", "[dhcp][journal]") {
  TempDir dir;
  const auto leases = dir / "leases";
  {
    aggrik8s::FileDescriptor first = lock_dhcp_lease_file(leases, std::chrono::milliseconds(0));
    REQUIRE(first);
    CHECK(std::filesystem::exists(dir / "leases.lock"));
    // The lock belongs to the open file: this process's second open conflicts as another server's would.
    const auto started = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH(lock_dhcp_lease_file(leases, std::chrono::milliseconds(300)),
                      Catch::Contains(leases.string() + " is the lease file of another DHCP server running on this machine") &&
                          Catch::Contains("leases.lock is held"));
    CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(300));
    // A server on its way out lets go within the patience given: the new one takes the lock.
    std::thread ending([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      first.reset();
    });
    aggrik8s::FileDescriptor second = lock_dhcp_lease_file(leases, std::chrono::seconds(20));
    ending.join();
    CHECK(second);
  }
  // The lock file stays (empty) and the lease file is not created by locking.
  CHECK(std::filesystem::file_size(dir / "leases.lock") == 0);
  CHECK_FALSE(std::filesystem::exists(leases));
}
