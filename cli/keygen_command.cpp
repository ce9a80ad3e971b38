// `aggrik8s-image keygen`: the RSA-2048 key pair that signs Pi 5 HTTP boot images. The private key
// goes into the profile (output.http_boot.key: {file: ...}); the public key into each Pi's EEPROM.
// Key generation and PEM encoding are builder/rpi/pi_boot_signature; this file writes the two files
// with the right modes and tells the user what to do next.
#include <cstdio>
#include <filesystem>
#include <string>

#include "builder/build_output.hpp"
#include "builder/rpi/pi_boot_signature.hpp"
#include "cli/commands.hpp"
#include "core/error.hpp"

namespace aggrik8s::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* default_key_name = "pi5-boot";

// NAME becomes two file names in DIR: a bare name, never a path.
void check_key_name(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    throw UsageError("--name: expected a plain file name such as '" + std::string(default_key_name) +
                     "' (no '/', not starting with '.'), got '" + name + "'");
  }
}

}  // namespace

Command keygen_command() {
  CommandSpec spec{
      "keygen",
      "",
      "Create the RSA-2048 key pair that signs Pi 5 HTTP boot images (boot.img/boot.sig)",
      "Writes DIR/NAME.pem, the private key (PKCS#8 PEM, mode 0600 from the moment it is created,\n"
      "whatever the umask), and DIR/NAME.pub.pem, the public key (SubjectPublicKeyInfo PEM, 0644).\n"
      "Refuses to replace either file when it exists, unless --force. Prints both paths, the public\n"
      "key's sha256 fingerprint (of its DER form: openssl pkey -pubin -in NAME.pub.pem -outform DER |\n"
      "sha256sum) and the next steps; never prints the private key.\n"
      "\n"
      "The Pi 5 bootloader boots over HTTP only when boot.sig is signed by the key stored in its\n"
      "EEPROM, and it only takes 2048-bit RSA keys. Next steps:\n"
      "  1. store the public key in each Pi's EEPROM:\n"
      "     rpi-eeprom-config -c boot.conf -p NAME.pub.pem -o pieeprom.upd pieeprom.original.bin\n"
      "     (see 'aggrik8s-image eeprom-config --help'); a public EEPROM update from Raspberry Pi\n"
      "     removes the key again, so re-apply it after one.\n"
      "  2. name the private key in the profile: output: {http_boot: {key: {file: DIR/NAME.pem}}}\n"
      "\n"
      "Exit status: 0 the key pair was written; 1 a file exists (without --force) or cannot be\n"
      "written; 2 usage error.",
      {{"out", 'o', "DIR", "directory for the key files (default: the current directory; created 0700 if missing)"},
       {"name", '\0', "NAME", std::string("base name of the files (default: ") + default_key_name + ")"},
       {"force", '\0', "", "replace existing key files"}},
      0,
      0};
  return {spec, [](const ParsedArguments& args) {
            fs::path directory = args.value("out").value_or(".");
            std::string name = args.value("name").value_or(default_key_name);
            check_key_name(name);
            fs::path private_path = directory / (name + ".pem");
            fs::path public_path = directory / (name + ".pub.pem");
            if (!args.flag("force")) {
              for (const auto& path : {private_path, public_path}) {
                if (fs::exists(fs::symlink_status(path))) {
                  throw Error(path.string() + " exists; keygen does not replace a key (images signed with it would "
                              "no longer boot on Pis holding its public key). Use --force to replace it.");
                }
              }
            }
            std::error_code ec;
            if (!fs::exists(directory)) {
              // A directory made for keys is the owner's alone, whatever the umask: others could
              // otherwise swap the key files in it.
              fs::create_directories(directory, ec);
              if (!ec) fs::permissions(directory, fs::perms::owner_all, fs::perm_options::replace, ec);
              if (ec) throw Error("cannot create " + directory.string() + ": " + ec.message());
            }

            builder::RsaPrivateKey key = builder::generate_pi_boot_key();
            builder::RsaPublicKey public_key = key.public_key();
            // Both written whole or not at all (temp name + rename); the private one is 0600 from its
            // creation, so it is never readable by others, even for a moment.
            builder::write_text_file_atomically(private_path, key.pem().reveal(), builder::FileMode::exactly(0600));
            try {
              builder::write_text_file_atomically(public_path, public_key.pem(), builder::FileMode::exactly(0644));
            } catch (...) {
              // A private key without its public half is of no use: do not leave one behind.
              fs::remove(private_path, ec);
              throw;
            }

            fs::path shown_private = fs::absolute(private_path).lexically_normal();
            std::printf("private key  %s (0600; keep it secret, never commit it)\n", shown_private.string().c_str());
            std::printf("public key   %s\n", fs::absolute(public_path).lexically_normal().string().c_str());
            std::printf("fingerprint  sha256:%s (RSA-2048, of the DER public key)\n\n", public_key.fingerprint().hex().c_str());
            std::printf("Next:\n"
                        "  1. Store the public key in each Pi 5's EEPROM (then flash pieeprom.upd with rpi-eeprom-update -d -f):\n"
                        "       rpi-eeprom-config -c boot.conf -p %s -o pieeprom.upd pieeprom.original.bin\n"
                        "     'aggrik8s-image eeprom-config --help' writes boot.conf. A public EEPROM update from\n"
                        "     Raspberry Pi removes the key: re-apply it after one.\n"
                        "  2. Sign boot images with the private key: in the profile,\n"
                        "       output:\n"
                        "         http_boot:\n"
                        "           key: {file: %s}\n",
                        public_path.string().c_str(), shown_private.string().c_str());
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
