#include "netboot/service/ephemeral_identity.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/identifiers.hpp"
#include "core/log.hpp"
#include "core/log_escape.hpp"
#include "core/positional_io.hpp"
#include "disk/image_decoder_errors.hpp"

namespace aggrik8s::netboot {

namespace {

constexpr std::string_view file_format = "aggrik8s-ephemeral-identity/1";
// A stored identity is a few hundred bytes; anything much larger is not one of ours.
constexpr std::size_t max_identity_file_size = 64 * 1024;

std::string lowercase_hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  text.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    text.push_back(digits[bytes[i] >> 4]);
    text.push_back(digits[bytes[i] & 0x0f]);
  }
  return text;
}

bool is_lowercase_hex(std::string_view text, std::size_t length) {
  if (text.size() != length) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::optional<std::string> decode_hex(std::string_view text) {
  if (text.size() % 2 != 0 || !is_lowercase_hex(text, text.size())) return std::nullopt;
  std::string bytes;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    bytes.push_back(static_cast<char>(nibble(text[i]) << 4 | nibble(text[i + 1])));
  }
  return bytes;
}

void random_bytes(unsigned char* out, std::size_t size) {
  if (RAND_bytes(out, static_cast<int>(size)) != 1) throw Error("OpenSSL's random generator failed");
}

// A node password as k3s/RKE2's ensureNodePassword makes it: 16 random bytes, lowercase hex.
std::string new_node_password() {
  unsigned char bytes[16];
  random_bytes(bytes, sizeof bytes);
  std::string password = lowercase_hex(bytes, sizeof bytes);
  OPENSSL_cleanse(bytes, sizeof bytes);
  return password;
}

// As systemd's sd_id128_randomize: 128 random bits marked as a version 4, variant 1 UUID, which also
// makes it never all zeros (systemd treats an all-zero id as unset).
std::string new_machine_id() {
  unsigned char bytes[16];
  random_bytes(bytes, sizeof bytes);
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);
  return lowercase_hex(bytes, sizeof bytes);
}

// The password may also be one an administrator copied from a node that existed before it became
// ephemeral, so any RKE2 accepts is kept: RKE2 trims white space and compares the rest.
bool is_acceptable_node_password(std::string_view password) {
  if (password.empty() || password.size() > 256) return false;
  for (char c : password) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

std::string not_regenerated(const std::string& file) {
  return "; it is not replaced by a new identity, since RKE2 rejects a known node name with a new node password. "
         "Restore " +
         file + " from a backup, or reset the node's identity (docs/netboot.md, 'Identity of ephemeral nodes')";
}

void check_node_name(const std::string& node_name) {
  if (!is_dns_label(node_name)) {
    throw Error("node name \"" + log_escape(node_name) +
                "\" is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'); it cannot name an "
                "identity file");
  }
}

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// Secrets live here: refuse what another user could read, replace or point elsewhere.
void check_private(const struct stat& st, const std::filesystem::path& path, const char* what) {
  if (st.st_uid != ::geteuid()) {
    throw Error(std::string(what) + " " + path.string() + " is owned by uid " + std::to_string(st.st_uid) +
                ", not by the user serve runs as (uid " + std::to_string(::geteuid()) +
                "); it holds node passwords and SSH host keys: chown it");
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    throw Error(std::string(what) + " " + path.string() + " has mode " + octal_mode(st.st_mode) +
                ", accessible by group or others; it holds node passwords and SSH host keys: chmod " +
                (S_ISDIR(st.st_mode) ? "700" : "600") + " " + path.string());
  }
}

std::string read_small_file(int fd, const std::filesystem::path& path) {
  std::string text;
  char buffer[4096];
  while (true) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_system_error("reading identity file " + path.string(), errno);
    }
    if (got == 0) return text;
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > max_identity_file_size) {
      throw Error("identity file " + path.string() + " is larger than " + std::to_string(max_identity_file_size) +
                  " bytes: not an identity file" + not_regenerated(path.string()));
    }
  }
}

void sync_directory(const std::filesystem::path& directory) {
  FileDescriptor fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_system_error("opening identity store " + directory.string() + " to sync it", errno);
  if (::fsync(fd.get()) != 0) throw_system_error("fsync of identity store " + directory.string(), errno);
}

// Temporary names start with '.', which no DNS label does, so they never collide with a node's file.
bool is_temporary_name(const std::string& name) {
  return name.size() > 5 && name.front() == '.' && name.ends_with(".tmp");
}

std::filesystem::path temporary_path_for(const std::filesystem::path& directory, const std::string& node_name) {
  static std::atomic<unsigned> counter{0};
  return directory /
         ("." + node_name + ".json." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".tmp");
}

}  // namespace

// --- identity values and their file format -----------------------------------------------------------

NodeIdentity generate_node_identity(const std::string& node_name, std::int64_t created_at) {
  check_node_name(node_name);
  return NodeIdentity{node_name, Secret(new_node_password()), generate_ed25519_key_pair(), new_machine_id(),
                      created_at};
}

std::string node_identity_json(const NodeIdentity& identity) {
  const std::string& seed = identity.ssh_host_key.seed.reveal();
  nlohmann::ordered_json json;
  json["format"] = file_format;
  json["node"] = identity.node_name;
  json["created_at"] = identity.created_at;
  json["node_password"] = identity.node_password.reveal();
  json["machine_id"] = identity.machine_id;
  json["ssh_host_ed25519_key"] = lowercase_hex(reinterpret_cast<const unsigned char*>(seed.data()), seed.size());
  json["ssh_host_ed25519_key_pub"] =
      "ssh-ed25519 " + openssh_ed25519_public_key_base64(identity.ssh_host_key.public_key);
  return json.dump(2) + "\n";
}

NodeIdentity parse_node_identity_json(std::string_view text, const std::string& file) {
  auto corrupt = [&](const std::string& what) {
    return Error("identity file " + file + " is corrupt: " + what + not_regenerated(file));
  };
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) throw corrupt("not valid JSON");
  if (!json.is_object()) throw corrupt("expected a JSON object");
  auto string_field = [&](const char* key) -> std::string {
    auto it = json.find(key);
    if (it == json.end()) throw corrupt("field '" + std::string(key) + "' is missing");
    if (!it->is_string()) throw corrupt("field '" + std::string(key) + "' must be a string");
    return it->get<std::string>();
  };
  if (std::string format = string_field("format"); format != file_format) {
    throw corrupt("field 'format' is \"" + log_escape(format) + "\", expected \"" + std::string(file_format) + "\"");
  }
  std::string node = string_field("node");
  if (!is_dns_label(node)) throw corrupt("field 'node' must be a DNS label, got \"" + log_escape(node) + "\"");
  auto created = json.find("created_at");
  if (created == json.end() || !created->is_number_integer())
    throw corrupt("field 'created_at' must be an integer (seconds since 1970)");

  std::string password = string_field("node_password");
  if (!is_acceptable_node_password(password)) {
    // Not quoted: it is a secret, even when malformed.
    throw corrupt(
        "field 'node_password' must be 1-256 printable ASCII characters without blanks (RKE2 makes 32 hex digits)");
  }
  std::string machine_id = string_field("machine_id");
  if (!is_lowercase_hex(machine_id, 32) || machine_id == std::string(32, '0')) {
    throw corrupt("field 'machine_id' must be 32 lowercase hex digits, not all zero, got \"" + log_escape(machine_id) +
                  "\"");
  }
  std::string seed_hex = string_field("ssh_host_ed25519_key");
  std::optional<std::string> seed = decode_hex(seed_hex);
  OPENSSL_cleanse(seed_hex.data(), seed_hex.size());
  if (!seed || seed->size() != 32)
    throw corrupt("field 'ssh_host_ed25519_key' must be 64 lowercase hex digits (an Ed25519 private key)");
  Ed25519PublicKey public_key = ed25519_public_key_of(*seed);
  std::string expected_public = "ssh-ed25519 " + openssh_ed25519_public_key_base64(public_key);
  if (string_field("ssh_host_ed25519_key_pub") != expected_public) {
    throw corrupt(
        "field 'ssh_host_ed25519_key_pub' does not match the private key 'ssh_host_ed25519_key' (expected \"" +
        expected_public + "\")");
  }
  NodeIdentity identity{node, Secret(std::move(password)), Ed25519KeyPair{Secret(*seed), public_key}, machine_id,
                        created->get<std::int64_t>()};
  OPENSSL_cleanse(seed->data(), seed->size());
  return identity;
}

// --- the store -----------------------------------------------------------------------------------------

EphemeralIdentityStore::EphemeralIdentityStore(std::filesystem::path directory) : directory_(std::move(directory)) {
  if (::mkdir(directory_.c_str(), 0700) == 0) {
    log::info("identity store ", directory_.string(), " created (mode 0700)");
  } else if (errno == ENOENT) {
    throw Error("cannot create identity store " + directory_.string() + ": its parent directory " +
                directory_.parent_path().string() + " does not exist");
  } else if (errno != EEXIST) {
    throw_system_error("creating identity store " + directory_.string(), errno);
  }
  struct stat st {};
  if (::lstat(directory_.c_str(), &st) != 0)
    throw_system_error("checking identity store " + directory_.string(), errno);
  if (S_ISLNK(st.st_mode)) {
    throw Error("identity store " + directory_.string() + " is a symbolic link; it must be a directory of its own");
  }
  if (!S_ISDIR(st.st_mode)) throw Error("identity store " + directory_.string() + " exists and is not a directory");
  check_private(st, directory_, "identity store");

  // Left by a server that stopped between writing and linking a new file: never linked, so never
  // served. They hold secrets, so they go.
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory_, error)) {
    if (!is_temporary_name(entry.path().filename().string())) continue;
    std::error_code remove_error;
    if (std::filesystem::remove(entry.path(), remove_error)) {
      log::info("identity store: removed unfinished file ", entry.path().string());
    } else if (remove_error) {
      log::warning("identity store: cannot remove unfinished file ", entry.path().string(), ": ",
                   remove_error.message());
    }
  }
  if (error) throw Error("cannot list identity store " + directory_.string() + ": " + error.message());
}

std::filesystem::path EphemeralIdentityStore::file_of(const std::string& node_name) const {
  check_node_name(node_name);
  return directory_ / (node_name + ".json");
}

std::optional<NodeIdentity> EphemeralIdentityStore::find(const std::string& node_name) const {
  std::filesystem::path file = file_of(node_name);
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP)
      throw Error("identity file " + file.string() + " is a symbolic link; it must be a regular file");
    throw_system_error("opening identity file " + file.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_system_error("checking identity file " + file.string(), errno);
  if (!S_ISREG(st.st_mode)) throw Error("identity file " + file.string() + " is not a regular file");
  check_private(st, file, "identity file");
  NodeIdentity identity = parse_node_identity_json(read_small_file(fd.get(), file), file.string());
  if (identity.node_name != node_name) {
    throw Error("identity file " + file.string() + " is corrupt: it holds the identity of node '" + identity.node_name +
                "', not of '" + node_name + "'" + not_regenerated(file.string()));
  }
  return identity;
}

NodeIdentity EphemeralIdentityStore::get_or_create(const std::string& node_name) {
  std::filesystem::path file = file_of(node_name);
  std::lock_guard lock(creating_);
  if (auto existing = find(node_name)) return std::move(*existing);

  NodeIdentity identity = generate_node_identity(node_name, static_cast<std::int64_t>(std::time(nullptr)));
  std::string text = node_identity_json(identity);
  std::filesystem::path temporary = temporary_path_for(directory_, node_name);
  bool linked = false;
  try {
    {
      FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) throw_system_error("creating " + temporary.string(), errno);
      write_all(fd.get(), text.data(), text.size(), temporary.string());
      // Data on disk before the name: a power loss must not leave an empty identity file behind.
      if (::fsync(fd.get()) != 0) throw_system_error("fsync of " + temporary.string(), errno);
    }
    if (::link(temporary.c_str(), file.c_str()) == 0) {
      linked = true;
    } else if (errno != EEXIST) {
      throw_system_error("linking " + temporary.string() + " to " + file.string(), errno);
    }
  } catch (...) {
    OPENSSL_cleanse(text.data(), text.size());
    ::unlink(temporary.c_str());
    throw;
  }
  OPENSSL_cleanse(text.data(), text.size());
  ::unlink(temporary.c_str());
  if (!linked) {
    // Another server process made it first: its identity is the one to keep.
    auto theirs = find(node_name);
    if (!theirs) throw Error("identity file " + file.string() + " vanished while it was being created");
    return std::move(*theirs);
  }
  sync_directory(directory_);
  log::info("node ", node_name, ": new ephemeral identity stored in ", file.string(), " (SSH host key ",
            openssh_fingerprint_sha256(identity.ssh_host_key.public_key), ", machine-id ", identity.machine_id, ")");
  return identity;
}

// --- the bundle ----------------------------------------------------------------------------------------

namespace {

struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveEntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t append_to_string(archive*, void* out, const void* data, size_t size) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

bool is_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '-' || name.front() == '.') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
      return false;
  }
  return true;
}

// "./etc/ssh/" -> "etc/ssh"; nullopt for names that would leave the extraction directory.
std::optional<std::string> relative_entry_name(std::string_view name) {
  if (name.starts_with("/")) return std::nullopt;
  while (name.starts_with("./")) name.remove_prefix(2);
  while (name.ends_with("/")) name.remove_suffix(1);
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t slash = name.find('/', start);
    std::string_view part =
        name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") return std::nullopt;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::string(name);
}

class TarWriter {
 public:
  TarWriter() : archive_(archive_write_new()) {
    // Extended attributes of copied entries once, as SCHILY.xattr (as the builder's node layer has
    // them), not also as LIBARCHIVE.xattr, which GNU tar warns about and ignores.
    if (!archive_ || archive_write_set_format_pax_restricted(archive_.get()) != ARCHIVE_OK ||
        archive_write_set_format_option(archive_.get(), "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(archive_.get(), 1) != ARCHIVE_OK ||
        archive_write_open(archive_.get(), &bytes_, nullptr, append_to_string, nullptr) != ARCHIVE_OK) {
      throw Error("cannot start the identity bundle tar: " +
                  (archive_ ? libarchive_error_text(archive_.get()) : "out of memory"));
    }
  }
  archive* get() { return archive_.get(); }

  void header(archive_entry* entry) {
    if (archive_write_header(archive_.get(), entry) != ARCHIVE_OK) {
      throw Error(std::string("identity bundle tar: cannot write the header of ") + archive_entry_pathname(entry) +
                  ": " + libarchive_error_text(archive_.get()));
    }
  }
  void data(std::string_view bytes, const std::string& name) {
    if (bytes.empty()) return;
    if (archive_write_data(archive_.get(), bytes.data(), bytes.size()) != static_cast<la_ssize_t>(bytes.size())) {
      throw Error("identity bundle tar: cannot write " + name + ": " + libarchive_error_text(archive_.get()));
    }
  }

  // A generated entry: owned 0:0 by number, the given time, no atime/ctime (they would need pax
  // extended headers and carry nothing).
  void add(std::string_view path, mode_t type, mode_t permissions, std::string_view content, std::int64_t mtime) {
    std::unique_ptr<archive_entry, ArchiveEntryDeleter> entry(archive_entry_new());
    std::string name(path);
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_filetype(entry.get(), type);
    archive_entry_set_perm(entry.get(), permissions);
    archive_entry_set_uid(entry.get(), 0);
    archive_entry_set_gid(entry.get(), 0);
    archive_entry_set_mtime(entry.get(), static_cast<time_t>(mtime), 0);
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
    header(entry.get());
    data(content, name);
  }

  std::string finish() {
    if (archive_write_close(archive_.get()) != ARCHIVE_OK) {
      throw Error("identity bundle tar: cannot finish: " + libarchive_error_text(archive_.get()));
    }
    return std::move(bytes_);
  }

 private:
  std::string bytes_;  // before archive_: the writer flushes into it when freed
  std::unique_ptr<archive, ArchiveWriteDeleter> archive_;
};

constexpr std::string_view generated_directories[] = {"etc", "etc/rancher", "etc/rancher/node", "etc/ssh"};

bool is_generated_file(std::string_view name) {
  return name == identity_node_password_path || name == identity_ssh_host_key_path ||
         name == identity_ssh_host_public_key_path || name == identity_machine_id_path;
}

// Copies the node layer's entries into `out`; returns the (relative) names of the directories it had.
std::set<std::string> copy_node_layer(std::string_view node_layer_tar, const std::string& node, TarWriter& out) {
  std::set<std::string> directories;
  if (node_layer_tar.empty()) return directories;
  const std::string what = "node layer tar of node '" + node + "'";
  std::unique_ptr<archive, ArchiveReadDeleter> in(archive_read_new());
  if (!in || archive_read_support_format_tar(in.get()) != ARCHIVE_OK) {
    throw Error(what + " cannot be read: " + (in ? libarchive_error_text(in.get()) : "out of memory"));
  }
  // libarchive reads the first header here to recognise the format.
  if (archive_read_open_memory(in.get(), node_layer_tar.data(), node_layer_tar.size()) != ARCHIVE_OK) {
    throw Error(what + " is not a valid tar: " + libarchive_error_text(in.get()));
  }
  std::vector<char> buffer(64 * 1024);
  archive_entry* entry = nullptr;
  while (true) {
    int status = archive_read_next_header(in.get(), &entry);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN)
      throw Error(what + " is not a valid tar: " + libarchive_error_text(in.get()));
    const char* raw_name = archive_entry_pathname(entry);
    std::string shown = log_escape(raw_name != nullptr ? raw_name : "");
    std::optional<std::string> name = relative_entry_name(raw_name != nullptr ? raw_name : "");
    const char* hardlink = archive_entry_hardlink(entry);
    if (!name || name->empty() || (hardlink != nullptr && !relative_entry_name(hardlink))) {
      throw Error(what + ": entry \"" + shown + "\" is absolute or contains '..'; entries must stay inside the root " +
                  "they are extracted into (etc/..., no leading '/')");
    }
    if (is_generated_file(*name)) {
      log::debug(what, ": entry ", shown, " is replaced by the node's generated identity");
      continue;
    }
    if (archive_entry_filetype(entry) == AE_IFDIR) directories.insert(*name);
    // Holes are written out as zeros: the pax writer would otherwise expect only the sparse map's data.
    archive_entry_sparse_clear(entry);
    out.header(entry);
    la_int64_t copied = 0;
    while (true) {
      la_ssize_t got = archive_read_data(in.get(), buffer.data(), buffer.size());
      if (got < 0)
        throw Error(what + ": cannot read the data of \"" + shown + "\": " + libarchive_error_text(in.get()));
      if (got == 0) break;
      out.data(std::string_view(buffer.data(), static_cast<std::size_t>(got)), shown);
      copied += got;
    }
    if (archive_entry_size_is_set(entry) && hardlink == nullptr && copied != archive_entry_size(entry)) {
      throw Error(what + ": entry \"" + shown + "\" is truncated (" + std::to_string(copied) + " of " +
                  std::to_string(archive_entry_size(entry)) + " bytes)");
    }
  }
  return directories;
}

}  // namespace

std::string identity_bundle_tar(const NodeIdentity& identity, std::string_view node_layer_tar,
                                const std::string& hostname, std::optional<std::int64_t> mtime) {
  if (!is_host_name(hostname)) {
    throw Error(
        "host name \"" + log_escape(hostname) + "\" of node '" + identity.node_name +
        "' is not a host name (1-253 of letters, digits, '-' and '.'); it goes into the SSH host key's comment");
  }
  std::int64_t time = mtime.value_or(identity.created_at);
  std::string comment = "root@" + hostname;

  TarWriter out;
  std::set<std::string> layer_directories = copy_node_layer(node_layer_tar, identity.node_name, out);
  for (std::string_view directory : generated_directories) {
    if (!layer_directories.contains(std::string(directory))) out.add(directory, AE_IFDIR, 0755, {}, time);
  }
  std::string password = identity.node_password.reveal() + "\n";
  out.add(identity_node_password_path, AE_IFREG, 0600, password, time);
  OPENSSL_cleanse(password.data(), password.size());
  std::string private_key =
      openssh_ed25519_private_key_file(identity.ssh_host_key.seed.reveal(), identity.ssh_host_key.public_key, comment);
  out.add(identity_ssh_host_key_path, AE_IFREG, 0600, private_key, time);
  OPENSSL_cleanse(private_key.data(), private_key.size());
  out.add(identity_ssh_host_public_key_path, AE_IFREG, 0644,
          openssh_ed25519_public_key_line(identity.ssh_host_key.public_key, comment), time);
  out.add(identity_machine_id_path, AE_IFREG, 0444, identity.machine_id + "\n", time);
  return out.finish();
}

}  // namespace aggrik8s::netboot
