// `eeprom-config --http-boot` as a user runs it, with a CA certificate made by the real openssl: the
// printed HTTP_CACERT_HASH is what sha256sum says of the DER file; PEM input and a missing file are
// usage errors that name the file.
#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

using namespace aggrik8s;

TEST_CASE("eeprom-config --http-boot --cacert-der: the hash is sha256sum of the DER file", "[cli][eeprom]") {
  test::TempDir dir;
  const std::string pem = (dir.path() / "ca.pem").string(), der = (dir.path() / "ca.der").string();
  auto made = test::run("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + (dir.path() / "ca.key").string() + " -out " + pem +
                        " -subj /CN=test-ca -days 2 && openssl x509 -in " + pem + " -outform DER -out " + der);
  REQUIRE(made.exit_code == 0);
  auto sum = test::run("sha256sum " + der + " | cut -d' ' -f1");
  REQUIRE(sum.exit_code == 0);
  const std::string hash = sum.output.substr(0, 64);
  const std::string cli = test::cli_path().string();

  auto https = test::run(cli + " eeprom-config --http-boot --http-host boot.lab --serial 100000009FFEFDEF --cacert-der " + der);
  INFO(https.output);
  CHECK(https.exit_code == 0);
  CHECK(https.output.find("\nHTTP_CACERT_HASH=" + hash + "\n") != std::string::npos);
  CHECK(https.output.find("\nHTTP_PATH=net_install/9ffefdef\n") != std::string::npos);  // cpuinfo form -> low 8, lower case
  CHECK(https.output.find("--cacertder " + der + "\n") != std::string::npos);

  auto from_pem = test::run(cli + " eeprom-config --http-boot --http-host boot.lab --cacert-der " + pem);
  CHECK(from_pem.exit_code == 2);
  CHECK(from_pem.output.find(pem + " is a PEM certificate") != std::string::npos);
  auto missing = test::run(cli + " eeprom-config --http-boot --http-host boot.lab --cacert-der " + der + ".nope");
  CHECK(missing.exit_code == 2);
  CHECK(missing.output.find(der + ".nope: cannot open") != std::string::npos);
  auto stray = test::run(cli + " eeprom-config --serial 9ffefdef");
  CHECK(stray.exit_code == 2);
  CHECK(stray.output.find("--serial needs --http-boot") != std::string::npos);
}
