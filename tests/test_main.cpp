// The test runners' main: Catch2's, with two warnings made failures for every run (ctest runs one test
// case per process, by name):
//   NoTests       a name that matches no test case fails instead of passing with nothing run (a ';' in
//                 a name once cut it short on its way through CMake, and 13 cases "passed" that way);
//   NoAssertions  a test case that asserts nothing fails.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (int status = session.applyCommandLine(argc, argv); status != 0) return status;
  // Listing (test discovery) runs no test case: only a run is held to these.
  // (configData, not config(): the Config object is built from it on first use.)
  Catch::ConfigData& data = session.configData();
  if (!data.listTestNamesOnly && !data.listTests) {
    data.warnings =
        static_cast<Catch::WarnAbout::What>(Catch::WarnAbout::NoTests | Catch::WarnAbout::NoAssertions);
  }
  return session.run();
}
