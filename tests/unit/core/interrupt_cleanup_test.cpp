// An interrupted command removes what it registered and exits as a shell reports a signal's death;
// what it forgot (renamed into place, or removed itself) stays. Run in a forked child, which installs
// the handler: the test process keeps its own signal dispositions.
#include "core/interrupt_cleanup.hpp"

#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <thread>

#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

// Runs `child` in a forked process that installs the handler and, after `child`, waits for the
// cleanup thread to end it on the signal `child` raised; returns the exit code it ended with.
int exit_code_of_interrupted_child(const std::function<void()>& child) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    InterruptCleanup::install();
    child();
    std::this_thread::sleep_for(std::chrono::seconds(30));  // the cleanup thread ends the process
    ::_exit(99);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("interrupt cleanup: SIGINT, SIGTERM, SIGHUP and SIGPIPE remove registered files and trees, exit 128 + signal", "[interrupt]") {
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) {
    test::TempDir dir;
    test::write_file(dir / "image.img.partial", "half an image");
    test::write_file(dir / ".work-1/secret", "token");
    test::write_file(dir / "done.img", "a finished image");
    int exit_code = exit_code_of_interrupted_child([&] {
      InterruptCleanup::remove_on_interrupt(dir / "image.img.partial");
      InterruptCleanup::remove_on_interrupt(dir / ".work-1");
      auto done = InterruptCleanup::remove_on_interrupt(dir / "done.img");
      InterruptCleanup::forget(done);  // renamed into place: no longer the interrupt's to remove
      ::raise(signal);
    });
    INFO("signal " << signal);
    CHECK(exit_code == 128 + signal);
    CHECK_FALSE(fs::exists(dir / "image.img.partial"));
    CHECK_FALSE(fs::exists(dir / ".work-1"));
    CHECK(fs::exists(dir / "done.img"));
  }
}

TEST_CASE("interrupt cleanup: a write to a pipe nobody reads any more ends the command with its cleanup, exit 141", "[interrupt]") {
  // As `build ... | head` does once head has its lines: the next log line's write raises SIGPIPE.
  test::TempDir dir;
  test::write_file(dir / ".work-1/secret", "token");
  int exit_code = exit_code_of_interrupted_child([&] {
    InterruptCleanup::remove_on_interrupt(dir / ".work-1");
    int ends[2];
    if (::pipe(ends) != 0) ::_exit(97);
    ::close(ends[0]);
    [[maybe_unused]] ssize_t written = ::write(ends[1], "log line\n", 9);
  });
  CHECK(exit_code == 128 + SIGPIPE);
  CHECK_FALSE(fs::exists(dir / ".work-1"));
}

TEST_CASE("interrupt cleanup: a signal during hold_off is acted on after its step, on what is still registered", "[interrupt]") {
  for (bool step_commits : {true, false}) {
    test::TempDir dir;
    test::write_file(dir / "node.img", "a finished image");
    test::write_file(dir / "SHA256SUMS", "its record");
    int exit_code = exit_code_of_interrupted_child([&] {
      auto image = InterruptCleanup::remove_on_interrupt(dir / "node.img");
      InterruptCleanup::hold_off([&] {
        ::raise(SIGINT);
        // Time for the cleanup thread to see the signal: it must wait for this step.
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        if (!fs::exists(dir / "node.img")) ::_exit(98);
        InterruptCleanup::remove_on_interrupt(dir / "SHA256SUMS");  // registering inside the step works
        if (step_commits) {
          InterruptCleanup::forget(image);
          test::write_file(dir / "committed", "");
        }
      });
    });
    INFO("step commits: " << step_commits);
    CHECK(exit_code == 130);
    CHECK(fs::exists(dir / "node.img") == step_commits);
    CHECK_FALSE(fs::exists(dir / "SHA256SUMS"));  // registered inside the step and never forgotten
  }
}

TEST_CASE("interrupt cleanup: a registered tree another thread keeps writing into is removed whole", "[interrupt]") {
  // The build's main thread goes on writing a node's work files while the cleanup runs: a file created
  // after remove_all listed the directory kept the directory (and that file) behind.
  for (int round = 0; round < 5; ++round) {
    test::TempDir dir;
    fs::create_directories(dir / ".work-1" / "n1");
    int exit_code = exit_code_of_interrupted_child([&] {
      InterruptCleanup::remove_on_interrupt(dir / ".work-1");
      std::thread writer([&] {
        // By path, and never making directories (as the builds write their work files).
        for (unsigned i = 0;; ++i) {
          std::string file = (dir / ".work-1" / "n1" / ("part-" + std::to_string(i % 64))).string();
          int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
          if (fd >= 0) ::close(fd);
        }
      });
      writer.detach();  // writes until the cleanup thread ends the process
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ::raise(SIGINT);
    });
    CHECK(exit_code == 130);
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
    INFO("round " << round);
    CHECK(left.empty());
  }
}
