// keygen and `inspect boot.img --boot-sig --public-key` as a user runs them, with boot images made by
// mkfs.fat/mtools and boot.sig files made by openssl (rpi-eeprom-digest's own commands).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

std::string cli() { return test::cli_path().string(); }

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

void require_run(const std::string& command) {
  auto result = test::run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

// boot.sig as `rpi-eeprom-digest -k KEY -i IMAGE -o SIG` writes it (SOURCE_DATE_EPOCH=1700000000).
void sign_like_rpi_eeprom_digest(const fs::path& key, const fs::path& image, const fs::path& sig) {
  require_run("sha256sum " + image.string() + " | awk '{print $1}' > " + sig.string() + " && echo 'ts: 1700000000' >> " +
              sig.string() + " && openssl dgst -sign " + key.string() + " -sha256 -out " + sig.string() + ".bin " +
              image.string() + " && echo \"rsa2048: $(xxd -c 4096 -p < " + sig.string() + ".bin)\" >> " + sig.string());
}

}  // namespace

TEST_CASE("keygen writes a 0600 private and 0644 public RSA-2048 key, never over an existing one", "[cli][keygen]") {
  test::TempDir dir;
  fs::path out = dir / "keys";
  auto made = test::run("umask 000; " + cli() + " keygen --out " + out.string() + " --name node");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
  CHECK(mode_of(out / "node.pem") == 0600);
  CHECK(mode_of(out / "node.pub.pem") == 0644);
  CHECK(mode_of(out) == 0700);
  CHECK(made.output.find((out / "node.pem").string()) != std::string::npos);
  CHECK(made.output.find("rpi-eeprom-config -c boot.conf -p " + (out / "node.pub.pem").string() +
                         " -o pieeprom.upd pieeprom.original.bin") != std::string::npos);
  CHECK(made.output.find("key: {file: " + (out / "node.pem").string() + "}") != std::string::npos);
  CHECK(made.output.find("PRIVATE KEY") == std::string::npos);
  std::string private_pem = test::read_file(out / "node.pem");
  CHECK(made.output.find(private_pem.substr(40, 64)) == std::string::npos);

  auto bits = test::run("openssl pkey -in " + (out / "node.pem").string() + " -noout -text | head -1");
  CHECK(bits.output.find("2048 bit") != std::string::npos);
  auto fingerprint = test::run("openssl pkey -pubin -in " + (out / "node.pub.pem").string() + " -outform DER | sha256sum");
  CHECK(made.output.find("sha256:" + fingerprint.output.substr(0, 64)) != std::string::npos);

  auto again = test::run(cli() + " keygen --out " + out.string() + " --name node");
  CHECK(again.exit_code == 1);
  CHECK(again.output.find((out / "node.pem").string() + " exists") != std::string::npos);
  CHECK(test::read_file(out / "node.pem") == private_pem);

  auto forced = test::run(cli() + " keygen --out " + out.string() + " --name node --force");
  INFO(forced.output);
  CHECK(forced.exit_code == 0);
  CHECK(test::read_file(out / "node.pem") != private_pem);
  CHECK(mode_of(out / "node.pem") == 0600);
  CHECK_FALSE(fs::exists(out / "node.pem.partial"));

  CHECK(test::run(cli() + " keygen --name ../escape").exit_code == 2);
}

TEST_CASE("inspect lists a boot.img and verifies its boot.sig against a public key", "[cli][inspect]") {
  test::TempDir dir;
  std::string d = dir.path().string();
  require_run(cli() + " keygen --out " + d + " --name good >/dev/null");
  require_run(cli() + " keygen --out " + d + " --name other >/dev/null");
  fs::path image = dir / "boot.img";
  test::write_file(dir / "config.txt", "kernel=kernel_2712.img\n");
  test::write_file(dir / "kernel.img", test::random_bytes(200000, 3));
  require_run("mkfs.fat -C -n BOOT " + image.string() + " 16384 >/dev/null && mcopy -i " + image.string() + " " + d +
              "/config.txt ::config.txt && mmd -i " + image.string() + " ::overlays && mcopy -i " + image.string() + " " + d +
              "/kernel.img ::kernel_2712.img && mcopy -i " + image.string() + " " + d + "/config.txt ::overlays/README");
  sign_like_rpi_eeprom_digest(dir / "good.pem", image, dir / "boot.sig");

  std::string verify = cli() + " inspect " + image.string() + " --boot-sig " + d + "/boot.sig";
  auto ok = test::run(verify + " --public-key " + d + "/good.pub.pem");
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK(ok.output.find("200000 kernel_2712.img") != std::string::npos);
  CHECK(ok.output.find("overlays/README") != std::string::npos);
  CHECK(ok.output.find("result      verified") != std::string::npos);

  auto json = test::run(verify + " --public-key " + d + "/good.pub.pem --json");
  REQUIRE(json.exit_code == 0);
  auto report = nlohmann::json::parse(json.output);
  CHECK(report["image"]["kind"] == "boot.img");
  CHECK(report["signature"]["verified"] == true);
  CHECK(report["signature"]["ts"] == 1700000000);
  CHECK(report["files"].size() == 4);

  auto wrong_key = test::run(verify + " --public-key " + d + "/other.pub.pem --json");
  CHECK(wrong_key.exit_code == 1);
  auto wrong = nlohmann::json::parse(wrong_key.output);
  CHECK(wrong["signature"]["verified"] == false);
  CHECK(wrong["signature"]["reason"].get<std::string>().find("does not verify") != std::string::npos);

  require_run("cp " + image.string() + " " + d + "/tampered.img && printf X | dd of=" + d +
              "/tampered.img bs=1 seek=100000 conv=notrunc status=none");
  auto tampered = test::run(cli() + " inspect " + d + "/tampered.img --boot-sig " + d + "/boot.sig --public-key " + d +
                            "/good.pub.pem");
  CHECK(tampered.exit_code == 1);
  CHECK(tampered.output.find("NOT VERIFIED: boot.img's sha256 is") != std::string::npos);

  require_run("head -c 200 " + d + "/boot.sig > " + d + "/truncated.sig");
  auto truncated = test::run(cli() + " inspect " + image.string() + " --boot-sig " + d + "/truncated.sig --public-key " +
                             d + "/good.pub.pem");
  CHECK(truncated.exit_code == 1);
  CHECK(truncated.output.find(d + "/truncated.sig:3: expected 'rsa2048: '") != std::string::npos);

  require_run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out " + d + "/big.pem 2>/dev/null && " +
              "openssl pkey -in " + d + "/big.pem -pubout -out " + d + "/big.pub.pem");
  auto big = test::run(verify + " --public-key " + d + "/big.pub.pem");
  CHECK(big.exit_code == 1);
  CHECK(big.output.find(d + "/big.pub.pem: the Pi 5 bootloader only takes 2048-bit RSA keys; this one is 4096 bits") !=
        std::string::npos);

  auto private_given = test::run(verify + " --public-key " + d + "/good.pem");
  CHECK(private_given.exit_code == 1);
  CHECK(private_given.output.find("this is a private key") != std::string::npos);

  CHECK(test::run(cli() + " inspect " + image.string() + " --boot-sig " + d + "/boot.sig").exit_code == 2);
}
