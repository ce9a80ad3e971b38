// "Permission denied" says whose permission: run as another user (uid 65534, as serve's systemd unit runs
// as its own user), commands name the user they run as and the file's owner and mode, or the directory
// on the way they cannot enter (core/permission_detail.hpp).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/test_support.hpp"

namespace fs = std::filesystem;
using namespace aggrik8s;

TEST_CASE("permission errors name the user the command runs as and the file's owner and mode", "[cli]") {
  if (::geteuid() != 0) {
    WARN("needs root, to run the commands as uid 65534");
    return;
  }
  test::TempDir dir;
  REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
  const std::string as_nobody = "setpriv --reuid 65534 --regid 65534 --clear-groups " + test::cli_path().string();
  const fs::path image = dir / "node.img";
  test::write_file(image, std::string(1 << 20, '\0'));
  REQUIRE(::chmod(image.c_str(), 0600) == 0);
  const std::string whose = "Permission denied (this process runs as uid 65534 (";
  const std::string owner = image.string() + " is owned by uid 0 (root), group 0 (root), mode 0600)";

  auto inspect = test::run(as_nobody + " inspect " + image.string());
  INFO(inspect.output);
  CHECK(inspect.exit_code == 1);
  CHECK_THAT(inspect.output, Catch::Contains("cannot open " + image.string()) && Catch::Contains(whose) && Catch::Contains(owner));

  auto flash = test::run(as_nobody + " flash --yes " + image.string() + " " + (dir / "out.img").string());
  INFO(flash.output);
  CHECK(flash.exit_code == 1);
  CHECK_THAT(flash.output, Catch::Contains(whose) && Catch::Contains(owner));

  // A secret in a directory the user cannot enter: the directory is named, not the file.
  fs::create_directories(dir / "private");
  test::write_file(dir / "private/token", "K10secret::server:0123\n");
  REQUIRE(::chmod((dir / "private").c_str(), 0700) == 0);
  test::write_file(dir / "nodes.yaml", "profiles:\n  deb: {kernel: {kernel: node.img}}\nnodes:\n"
                                       "  - {name: n1, match: {mac: '52:54:00:00:00:01'}, profile: deb, rke2_config: {file: private/token}}\n");
  auto validate = test::run(as_nobody + " validate " + (dir / "nodes.yaml").string());
  INFO(validate.output);
  CHECK(validate.exit_code == 1);
  CHECK_THAT(validate.output, Catch::Contains("cannot enter " + (dir / "private").string() +
                                              ", owned by uid 0 (root), group 0 (root), mode 0700)"));
  CHECK_THAT(validate.output, Catch::Contains("'profiles.deb.kernel.kernel': " + image.string() + " cannot be read: " + whose) &&
                                  Catch::Contains(owner));
}
