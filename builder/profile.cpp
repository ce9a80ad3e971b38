#include "builder/profile.hpp"

#include <algorithm>
#include <cctype>
#include <array>
#include <map>
#include <set>

#include "builder/proxmox_identifiers.hpp"
#include "core/config_reader.hpp"
#include "core/identifiers.hpp"
#include "core/log_escape.hpp"
#include "core/path_check.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

// One kernel command-line argument: printable ASCII or UTF-8, no blank, no control byte (a NUL ends the
// line for the boot loader and the kernel; a blank or tab splits it).
bool is_single_kernel_argument(std::string_view arg) {
  if (arg.empty()) return false;
  return std::none_of(arg.begin(), arg.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte <= 0x20 || byte == 0x7f;
  });
}

// A URL the build appends paths to, for a client that speaks http(s) only.
bool is_plain_http_url(std::string_view url) {
  bool scheme = url.starts_with("http://") || url.starts_with("https://");
  std::string_view rest = url.substr(url.find("//") + 2);
  return scheme && !rest.empty() && rest.front() != '/' && rest.find_first_of("?#") == std::string_view::npos &&
         is_single_kernel_argument(url);
}

// Whether two trees hold the same values, wherever they were written (locations aside).
bool same_config_value(const ConfigNode& a, const ConfigNode& b) {
  if (a.kind != b.kind || a.scalar != b.scalar || a.items.size() != b.items.size() || a.entries.size() != b.entries.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    if (!same_config_value(a.items[i], b.items[i])) return false;
  }
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    if (a.entries[i].key != b.entries[i].key || !same_config_value(a.entries[i].value, b.entries[i].value)) return false;
  }
  return true;
}

constexpr std::string_view default_rke2_release_base = "https://github.com/rancher/rke2/releases/download/";

// Keys of rke2.config that hold secrets: they must come from rke2.token, never from the profile.
const std::set<std::string, std::less<>> secret_rke2_keys{"token", "agent-token", "etcd-s3-secret-key"};

std::string url_encode_plus(std::string_view version) {
  std::string out;
  for (char c : version) {
    if (c == '+') {
      out += "%2B";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// `key` as one scalar or a list of them: a dual-stack node's addresses or gateways ("10.0.0.1" or
// [10.0.0.1, "fd00::1"]). `what` completes "must be ..." for any other shape.
std::vector<std::string> scalar_or_list(ConfigMapReader& reader, std::string_view key, const std::string& what) {
  std::vector<std::string> out;
  const ConfigNode* value = reader.node(key);
  if (value == nullptr || value->is_null()) return out;
  if (value->is_scalar()) {
    out.push_back(value->scalar);
  } else if (value->is_sequence()) {
    for (const auto& entry : value->items) {
      if (entry.is_scalar()) out.push_back(entry.scalar);
      else reader.diagnostics().error(entry.location, "'" + reader.key_path(key) + "' entries must each be " + what);
    }
  } else {
    reader.error_at(key, "'" + reader.key_path(key) + "' must be " + what + " or a list of them");
  }
  return out;
}

// Default routes: at most one gateway per address family (a node has one default route per family),
// each an address without prefix. Returns how many gateways each family has (index 4 and 6).
std::array<int, 7> check_gateways(ConfigMapReader& reader, std::string_view key, const std::vector<std::string>& gateways) {
  std::array<int, 7> by_family{};
  for (const auto& g : gateways) {
    int family = ip_address_family(g);
    if (family == 0) {
      reader.error_at(key, "'" + reader.key_path(key) + "' must be an IPv4 or IPv6 address without prefix, e.g. 10.0.20.1 or "
                                                        "fd00:55::1, got '" + g + "'");
    } else if (++by_family[static_cast<std::size_t>(family)] == 2) {
      reader.error_at(key, "'" + reader.key_path(key) + "' has two IPv" + std::to_string(family) +
                               " gateways; a node has one default route per address family");
    }
  }
  return by_family;
}

// ---- step 1: files and `extends:` ----

struct LoadedTree {
  ConfigNode tree;
  std::vector<fs::path> files;  // outermost base first, the profile itself last
};

// `referenced_at`: the `extends:` entry that named `path` (none for the profile itself).
bool load_with_extends(const fs::path& path, Diagnostics& diagnostics, std::vector<fs::path>& stack, LoadedTree& out,
                       const SourceLocation* referenced_at = nullptr) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(path, ec);
  if (ec) {
    diagnostics.error(referenced_at != nullptr ? *referenced_at : SourceLocation{path.string(), 0, 0},
                      (referenced_at != nullptr ? "'extends': " : "") + path.string() + " " +
                          path_check_failure(ec, "cannot be resolved"));
    return false;
  }
  if (std::find(stack.begin(), stack.end(), canonical) != stack.end()) {
    std::string cycle;
    for (const auto& p : stack) cycle += p.string() + " -> ";
    // At the `extends:` entry that closes the cycle, so an editor jumps to the line to change.
    diagnostics.error(referenced_at != nullptr ? *referenced_at : SourceLocation{path.string(), 0, 0},
                      "'extends' forms a cycle: " + cycle + canonical.string());
    return false;
  }
  if (referenced_at != nullptr) {
    // A base that cannot be read is reported at the `extends:` entry that names it.
    std::error_code exists_error;
    if (!fs::is_regular_file(canonical, exists_error)) {
      diagnostics.error(*referenced_at, "'extends': " + path.string() + " " +
                                            (fs::exists(canonical, exists_error) ? std::string("is not a regular file")
                                                                                 : path_check_failure(exists_error, "does not exist")));
      return false;
    }
  }
  ConfigNode tree = load_yaml_file(path, diagnostics);
  if (tree.is_null()) {
    if (diagnostics.has_errors()) return false;
    diagnostics.error({path.string(), 1, 1}, "the profile is empty");
    return false;
  }
  if (!tree.is_map()) {
    diagnostics.error(tree.location, std::string("a profile must be a map of settings, got ") + tree.kind_name());
    return false;
  }
  std::vector<std::pair<fs::path, SourceLocation>> bases;
  if (const ConfigNode* extends = tree.find("extends")) {
    auto add = [&](const ConfigNode& item) {
      if (!item.is_scalar() || item.scalar.empty()) {
        diagnostics.error(item.location, "'extends' must be a path or a list of paths");
        return;
      }
      fs::path base(item.scalar);
      bases.emplace_back(base.is_relative() ? item.base_directory() / base : base, item.location);
    };
    if (extends->is_sequence()) {
      for (const auto& item : extends->items) add(item);
    } else {
      add(*extends);
    }
  }
  tree.erase("extends");
  stack.push_back(canonical);
  ConfigNode merged;
  bool ok = true;
  for (const auto& [base, location] : bases) {
    LoadedTree loaded;
    if (!load_with_extends(base, diagnostics, stack, loaded, &location)) {
      ok = false;
      continue;
    }
    merged = merged.is_map() ? merge_config(merged, loaded.tree) : loaded.tree;
    for (auto& f : loaded.files) {
      if (std::find(out.files.begin(), out.files.end(), f) == out.files.end()) out.files.push_back(f);
    }
  }
  stack.pop_back();
  out.tree = merged.is_map() ? merge_config(merged, tree) : tree;
  out.files.push_back(path);
  return ok;
}

// ---- step 3: typed reading ----

class ProfileReader {
 public:
  ProfileReader(Diagnostics& diagnostics, const ProfileCheckOptions& options)
      : diagnostics_(diagnostics), options_(options) {}

  void read_output(ConfigMapReader& top, OutputSettings& output) {
    auto reader = top.map("output");
    if (!reader) return;
    output.image_size = reader->byte_size("image_size");
    if (auto free = reader->byte_size("root_free_space")) output.root_free_space = *free;
    if (auto compress = reader->node("compress")) {
      auto list = reader->string_list("compress");
      if (list) {
        for (const auto& c : *list) {
          if (c != "zstd" && c != "xz") {
            diagnostics_.error(compress->location, "'output.compress' entries must be zstd or xz, got '" + c + "'");
          }
        }
        output.compress = *list;
      }
    }
    if (auto bmap = reader->boolean("bmap")) output.bmap = *bmap;
    if (auto grow = reader->boolean("grow_root")) output.grow_root = *grow;
    if (auto images = reader->boolean("disk_images")) output.disk_images = *images;
    if (const ConfigNode* value = reader->node("ephemeral")) {
      if (auto enabled = parse_yaml_bool(*value)) {
        // `ephemeral: true` takes every default; `false` is the same as leaving it out.
        if (*enabled) output.ephemeral.emplace();
      } else if (auto ephemeral = reader->map("ephemeral")) {
        output.ephemeral = read_ephemeral(*ephemeral);
      }
    }
    if (auto http_boot = reader->map("http_boot")) output.http_boot = read_http_boot(*http_boot);
    if (output.http_boot && output.ephemeral && !output.ephemeral->serve_url) {
      reader->error_at("http_boot", "'output.http_boot' with 'output.ephemeral' needs 'output.ephemeral.serve_url' (where "
                                    "`aggrik8s-image serve` answers, e.g. http://10.0.0.2:8080): an ephemeral node's boot.img "
                                    "carries the URLs of its root");
    }
    if (!output.disk_images && !output.ephemeral) {
      reader->error_at("disk_images", "'output.disk_images: false' leaves nothing to build: add 'output.ephemeral'");
    }
    reader->finish();
  }

  std::optional<HttpBootSettings> read_http_boot(ConfigMapReader& reader) {
    auto key = read_secret_reference(reader, "key", true);
    if (key && options_.check_secrets) check_secret(*key, diagnostics_);
    HttpBootSettings h;
    if (key) h.key = *key;
    h.image_size = reader.byte_size("image_size");
    // Below this no FAT16 exists; a boot partition never fits anyway.
    if (h.image_size && *h.image_size < (4ull << 20)) {
      reader.error_at("image_size", "'output.http_boot.image_size' must be at least 4MiB (leave it out to size boot.img to fit)");
    }
    reader.finish();
    if (!key) return std::nullopt;
    return h;
  }

  EphemeralSettings read_ephemeral(ConfigMapReader& reader) {
    EphemeralSettings e;
    if (auto c = reader.one_of("compression", {"zstd", "xz", "gzip", "lz4"})) e.compression = *c;
    if (auto a = reader.one_of("image_archives", {"root", "omit"})) {
      e.image_archives = *a == "omit" ? EphemeralSettings::ImageArchives::omit : EphemeralSettings::ImageArchives::root;
    }
    if (auto m = reader.byte_size("memory")) {
      if (*m < (512ull << 20)) reader.error_at("memory", "'output.ephemeral.memory' must be at least 512MiB (a Pi 5 has 1-16 GiB)");
      e.memory = *m;
    }
    if (auto r = reader.byte_size("runtime_reserve")) e.runtime_reserve = *r;
    if (auto modules = reader.string_list("modules")) e.modules = *modules;
    e.busybox = reader.path_value("busybox");
    if (auto url = reader.string("serve_url")) {
      std::string base = *url;
      while (base.ends_with("/")) base.pop_back();
      // http:// only: the node's initramfs fetches its root and identity with busybox wget, which has
      // no TLS there (an https:// URL stopped every boot at once).
      if (!is_plain_http_url(base) || !base.starts_with("http://")) {
        reader.error_at("serve_url", "'output.ephemeral.serve_url' must be the http:// base URL of `aggrik8s-image serve` "
                                     "(e.g. http://10.0.0.2:8080; not https://: the initramfs's busybox wget has no "
                                     "TLS), got '" + log_escape(*url) + "'");
      }
      e.serve_url = base;
    }
    if (auto name = reader.string("serve_profile")) {
      if (name->empty() || name->find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos) {
        reader.error_at("serve_profile", "'output.ephemeral.serve_profile' must be a profile name of serve's nodes file "
                                         "(letters, digits, '.', '_', '-'), got '" + *name + "'");
      }
      e.serve_profile = *name;
    }
    reader.finish();
    return e;
  }

  Rke2Settings read_rke2(ConfigMapReader& top) {
    Rke2Settings rke2;
    auto reader = top.map("rke2", true);
    if (!reader) return rke2;
    rke2.where = reader->location();
    rke2.version = reader->string("version", true).value_or("");
    if (!rke2.version.empty() && !rke2.version.starts_with("v")) {
      reader->error_at("version", "'rke2.version' must look like v1.33.1+rke2r1, got '" + rke2.version + "'");
    }
    auto url = reader->string("release_url");
    auto dir = reader->path_value("release_dir");
    if (url && dir) {
      reader->error("'rke2' must have at most one of 'release_url' and 'release_dir'");
    } else if (url) {
      std::string why;
      if (!is_supported_location(*url, &why) || url->find("://") == std::string::npos) {
        reader->error_at("release_url", "'rke2.release_url' must be an http, https or file URL, got '" + redact_url_credentials(*url) + "'");
      }
      rke2.release = *url;
    } else if (dir) {
      // Existence is checked when the build fetches it: validate may run before inputs are made.
      rke2.release = dir->string();
    } else if (!rke2.version.empty()) {
      rke2.release = std::string(default_rke2_release_base) + url_encode_plus(rke2.version);
    }
    if (auto pin = reader->string("checksums_sha256")) {
      rke2.checksums_sha256 = Sha256Digest::parse(*pin);
      if (!rke2.checksums_sha256) {
        reader->error_at("checksums_sha256", "'rke2.checksums_sha256' must be 64 hexadecimal characters");
      }
    }
    rke2.images = reader->string_list("images").value_or(std::vector<std::string>{"rke2-images"});
    for (const auto& image : rke2.images) {
      if (!image.starts_with("rke2-images") || image.find('/') != std::string::npos) {
        reader->error_at("images", "'rke2.images' entries are archive names like rke2-images-core or "
                                   "rke2-images-canal, got '" + image + "'");
      }
    }
    rke2.role = reader->one_of("role", {"server", "agent"}, true).value_or("server");
    rke2.server = reader->string("server");
    if (rke2.server && !(rke2.server->starts_with("https://"))) {
      reader->error_at("server", "'rke2.server' must be an https URL such as https://10.0.0.10:9345");
    }
    rke2.token = read_secret_reference(*reader, "token");
    if (rke2.token && options_.check_secrets) check_secret(*rke2.token, diagnostics_);
    if (rke2.role == "agent") {
      if (!rke2.server) reader->error("an RKE2 agent needs 'rke2.server' (the server's https://host:9345)");
      if (!rke2.token) reader->error("an RKE2 agent needs 'rke2.token' to join its server");
    }
    if (const ConfigNode* config = reader->node("config")) {
      if (!config->is_map()) {
        diagnostics_.error(config->location, std::string("'rke2.config' must be a map of RKE2 config keys, got ") +
                                                 config->kind_name());
      } else {
        for (const auto& entry : config->entries) {
          if (secret_rke2_keys.contains(entry.key)) {
            diagnostics_.error(entry.key_location, "'rke2.config." + entry.key +
                                                       "' is a secret; reference it with rke2.token: {file: PATH} "
                                                       "instead of writing it in the profile");
          } else if (entry.key == "server") {
            diagnostics_.error(entry.key_location, "set the server with 'rke2.server', not 'rke2.config.server'");
          }
        }
        rke2.config = *config;
      }
    }
    if (const ConfigNode* registries = reader->node("registries")) {
      if (!registries->is_map()) {
        diagnostics_.error(registries->location, "'rke2.registries' must be a map (the content of registries.yaml)");
      } else {
        rke2.registries = *registries;
      }
    }
    reader->finish();
    return rke2;
  }

  SystemSettings read_system(ConfigMapReader& top, const std::string& node_name) {
    SystemSettings system;
    system.hostname = node_name;
    auto reader = top.map("system");
    if (!reader) return system;
    if (auto hostname = reader->string("hostname")) {
      if (!is_dns_label(*hostname)) {
        reader->error_at("hostname", "'" + reader->key_path("hostname") + "' must be a lowercase DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-'), got '" +
                                         *hostname + "'");
      }
      system.hostname = *hostname;
    }
    system.timezone = reader->string("timezone");
    if (system.timezone && (system.timezone->find("..") != std::string::npos || system.timezone->starts_with("/"))) {
      reader->error_at("timezone", "'system.timezone' must be a zone name such as Europe/Berlin");
    }
    system.locale = reader->string("locale");
    system.keyboard = reader->string("keyboard");
    if (auto ssh = reader->boolean("ssh")) system.ssh = *ssh;
    if (auto pw = reader->boolean("ssh_password_authentication")) system.ssh_password_authentication = *pw;
    std::set<std::string> user_names;
    reader->list("users", [&](const ConfigNode& item, const std::string& path) {
      ConfigMapReader user_reader(item, diagnostics_, path);
      if (!user_reader.valid()) {
        diagnostics_.error(item.location, "'" + path + "' must be a map with at least 'name'");
        return;
      }
      UserAccount user;
      user.name = user_reader.string("name", true).value_or("");
      if (!user.name.empty() && (!is_dns_label(user.name) || user.name == "root")) {
        user_reader.error_at("name", "'" + path + ".name' must be a lowercase user name other than root, got '" + user.name + "'");
      }
      if (!user.name.empty() && !user_names.insert(user.name).second) {
        user_reader.error_at("name", "user '" + user.name + "' is listed twice");
      }
      user.password_hash = read_secret_reference(user_reader, "password_hash");
      if (user.password_hash && options_.check_secrets) check_secret(*user.password_hash, diagnostics_);
      user.ssh_authorized_keys = user_reader.string_list("ssh_authorized_keys").value_or(std::vector<std::string>{});
      for (const auto& key : user.ssh_authorized_keys) {
        if (!is_ssh_public_key_line(key)) {
          user_reader.error_at("ssh_authorized_keys", "'" + path + ".ssh_authorized_keys' entries must be public keys "
                                                      "on one line (ssh-ed25519 AAAA..., ssh-rsa ..., ecdsa-...)");
        }
      }
      if (auto sudo = user_reader.boolean("sudo")) user.sudo = *sudo;
      user_reader.finish();
      system.users.push_back(std::move(user));
    });
    reader->finish();
    return system;
  }

  NetworkSettings read_network(ConfigMapReader& top) {
    NetworkSettings network;
    auto reader = top.map("network");
    if (!reader) return network;
    auto mode = reader->one_of("mode", {"dhcp", "static"});
    if (mode == "static") network.mode = NetworkSettings::Mode::static_address;
    if (auto interface = reader->string("interface")) network.interface = *interface;
    // One address or a list: a dual-stack node has an IPv4 and an IPv6 address, one gateway each.
    network.addresses = scalar_or_list(*reader, "address", "a CIDR address");
    network.gateways = scalar_or_list(*reader, "gateway", "an address");
    network.dns = reader->string_list("dns").value_or(std::vector<std::string>{});
    std::array<int, 7> addresses_by_family{};
    for (const auto& a : network.addresses) {
      int family = ip_cidr_family(a);
      if (family == 0) {
        reader->error_at("address", "'" + reader->key_path("address") + "' must be a CIDR address like 10.0.0.11/24 or "
                                    "fd00:10::11/64 (prefix 0-32 for IPv4, 0-128 for IPv6), got '" + a + "'");
      } else {
        ++addresses_by_family[static_cast<std::size_t>(family)];
      }
    }
    std::array<int, 7> gateways_by_family = check_gateways(*reader, "gateway", network.gateways);
    for (int family : {4, 6}) {
      auto f = static_cast<std::size_t>(family);
      if (gateways_by_family[f] > 0 && addresses_by_family[f] == 0 && !network.addresses.empty()) {
        reader->error_at("gateway", "'" + reader->key_path("gateway") + "' has an IPv" + std::to_string(family) +
                                    " gateway but 'address' has no IPv" + std::to_string(family) + " address to reach it from");
      }
    }
    for (const auto& dns : network.dns) {
      if (ip_address_family(dns) == 0) {
        reader->error_at("dns", "'" + reader->key_path("dns") + "' entries must be IPv4 or IPv6 addresses, got '" + dns + "'");
      }
    }
    if (network.mode == NetworkSettings::Mode::static_address && (network.addresses.empty() || network.gateways.empty())) {
      reader->error("a static network needs 'address' and 'gateway'");
    }
    if (network.mode == NetworkSettings::Mode::dhcp && !network.addresses.empty()) {
      reader->error_at("address", "'" + reader->key_path("address") + "' is only used with mode: static");
    }
    reader->finish();
    return network;
  }

  PiBootSettings read_boot(ConfigMapReader& top) {
    PiBootSettings boot;
    auto reader = top.map("boot");
    if (!reader) return boot;
    if (auto storage = reader->one_of("storage", {"sd", "nvme"})) {
      boot.storage = *storage == "nvme" ? PiBootSettings::Storage::nvme : PiBootSettings::Storage::sd;
    }
    if (auto gen = reader->integer("pcie_gen", 1, 3)) boot.pcie_gen = static_cast<int>(*gen);
    if (auto page = reader->integer("kernel_page_size_kib", 4, 16)) {
      if (*page != 4 && *page != 16) {
        reader->error_at("kernel_page_size_kib", "'boot.kernel_page_size_kib' must be 4 or 16");
      } else {
        boot.kernel_page_size_kib = static_cast<int>(*page);
      }
    }
    boot.config_txt = reader->string_list("config_txt").value_or(std::vector<std::string>{});
    for (const auto& line : boot.config_txt) {
      // Each entry is one line of the managed [all] block: an embedded line break would start a
      // section of its own ("...\n[pi4]") and move the entries after it out of [all].
      if (line.find_first_of("\r\n") != std::string::npos) {
        reader->error_at("config_txt", "'boot.config_txt' entries are single config.txt lines, got '" + log_escape(line) +
                                           "' (one list entry per line)");
      }
    }
    boot.cmdline = reader->string_list("cmdline").value_or(std::vector<std::string>{});
    for (const auto& arg : boot.cmdline) {
      if (!is_single_kernel_argument(arg)) {
        reader->error_at("cmdline", "'boot.cmdline' entries are single kernel arguments without spaces, got '" +
                                        log_escape(arg) + "'");
      }
    }
    reader->finish();
    return boot;
  }

  std::vector<fs::path> read_overlays(ConfigMapReader& top) {
    std::vector<fs::path> overlays;
    top.list("overlays", [&](const ConfigNode& item, const std::string& path) {
      if (!item.is_scalar() || item.scalar.empty()) {
        diagnostics_.error(item.location, "'" + path + "' must be a directory path");
        return;
      }
      fs::path dir(item.scalar);
      if (dir.is_relative()) dir = item.base_directory() / dir;
      dir = dir.lexically_normal();
      std::error_code ec;
      if (options_.check_paths && !fs::is_directory(dir, ec)) {
        // A file named where a directory belongs is told apart from a missing path: "does not exist"
        // sent users looking for a typo in a name that was there.
        std::error_code exists_error;
        std::string why = !ec && fs::exists(dir, exists_error) ? std::string("is not a directory")
                                                                : path_check_failure(ec, "does not exist");
        diagnostics_.error(item.location, "overlay directory " + dir.string() + " " + why);
      }
      overlays.push_back(dir);
    });
    return overlays;
  }

  std::vector<TalosPatch> read_patches(ConfigMapReader& reader) {
    std::vector<TalosPatch> patches;
    reader.list("patches", [&](const ConfigNode& item, const std::string& path) {
      ConfigMapReader patch_reader(item, diagnostics_, path);
      if (!patch_reader.valid()) {
        diagnostics_.error(item.location, "'" + path + "' must be {file: PATH}, {merge: MAP} or {json6902: LIST}");
        return;
      }
      int forms = patch_reader.has("file") + patch_reader.has("merge") + patch_reader.has("json6902");
      if (forms != 1) {
        patch_reader.error("'" + path + "' must have exactly one of 'file', 'merge' or 'json6902'");
        patch_reader.ignore("file");
        patch_reader.ignore("merge");
        patch_reader.ignore("json6902");
        return;
      }
      TalosPatch patch;
      patch.where = item.location;
      if (auto file = patch_reader.path_value("file")) {
        // As talosctl --config-patch reads a file: a list is an RFC 6902 patch; a map is a merge patch,
        // and a file may hold several maps ("---" between them), each a document of its own: the
        // v1alpha1 config's keys, or a typed document (apiVersion/kind, e.g. Talos 1.12's
        // HostnameConfig or LinkConfig) that talos_config_for_node merges into the config's document
        // of that kind and name, or adds.
        Diagnostics file_diagnostics;
        std::vector<ConfigNode> documents;
        if (auto text = read_config_text(*file, file_diagnostics)) {
          documents = load_yaml_documents(*text, file->string(), file_diagnostics);
          if (documents.empty() && !file_diagnostics.has_errors()) {
            file_diagnostics.error({file->string(), 0, 0}, "the patch file holds no document");
          }
        }
        diagnostics_.append(file_diagnostics);
        if (file_diagnostics.has_errors()) return;
        for (auto& content : documents) {
          if (content.is_sequence() && documents.size() > 1) {
            diagnostics_.error(content.location, "a JSON patch (a list) must be the only document of its patch file");
            return;
          }
          if (!content.is_sequence() && !content.is_map()) {
            diagnostics_.error(content.location, "a patch file must hold a map (merge patch) or a list (JSON patch)");
            return;
          }
        }
        patch_reader.finish();
        for (auto& content : documents) {
          TalosPatch part;
          part.kind = content.is_sequence() ? TalosPatch::Kind::json6902 : TalosPatch::Kind::merge;
          part.where = documents.size() > 1 ? content.location : item.location;
          part.content = std::move(content);
          patches.push_back(std::move(part));
        }
        return;
      } else if (const ConfigNode* merge = patch_reader.node("merge")) {
        if (!merge->is_map()) {
          diagnostics_.error(merge->location, "'" + path + ".merge' must be a map");
          return;
        }
        patch.content = *merge;
      } else if (const ConfigNode* ops = patch_reader.node("json6902")) {
        patch.kind = TalosPatch::Kind::json6902;
        if (!ops->is_sequence()) {
          diagnostics_.error(ops->location, "'" + path + ".json6902' must be a list of operations");
          return;
        }
        for (std::size_t i = 0; i < ops->items.size(); ++i) {
          ConfigMapReader op(ops->items[i], diagnostics_, path + ".json6902[" + std::to_string(i) + "]");
          if (!op.valid()) {
            diagnostics_.error(ops->items[i].location, "a JSON patch operation must be a map with 'op' and 'path'");
            continue;
          }
          auto kind = op.one_of("op", {"add", "remove", "replace", "move", "copy", "test"}, true);
          auto target = op.string("path", true);
          if (target && !target->empty() && !target->starts_with("/")) {
            op.error_at("path", "a JSON patch path must start with '/', got '" + *target + "'");
          }
          bool needs_value = kind == "add" || kind == "replace" || kind == "test";
          bool needs_from = kind == "move" || kind == "copy";
          if (needs_value && op.node("value", true) == nullptr) continue;
          if (needs_from) op.string("from", true);
          op.ignore("value");
          op.ignore("from");
        }
        patch.content = *ops;
      }
      patch_reader.finish();
      patches.push_back(std::move(patch));
    });
    return patches;
  }

  std::vector<std::string> read_kernel_args(ConfigMapReader& reader) {
    auto args = reader.string_list("kernel_args").value_or(std::vector<std::string>{});
    const std::string key = reader.key_path("kernel_args");
    for (const auto& arg : args) {
      if (!is_single_kernel_argument(arg)) {
        // A NUL ends the line where GRUB, the UKI stub and the kernel read it (talos.config= lost
        // after it); other control bytes are no argument either.
        reader.error_at("kernel_args", "'" + key + "' entries are single arguments of printable characters without "
                                       "spaces, got '" + log_escape(arg) + "'");
      } else if (arg.starts_with("-")) {
        // Talos' imager reads "-console=tty0" as "remove console=tty0"; passed on, the kernel would
        // get it literally and keep the default.
        reader.error_at("kernel_args", "'" + key + "': '" + arg + "' removes a default argument in Talos' imager; this "
                                       "build does not remove arguments (give the value you want instead, e.g. console=ttyS0)");
      } else if (arg.starts_with("talos.config=") || arg == "talos.config" || arg.starts_with("talos.platform=")) {
        // Talos reads the first talos.config= on the line: one given here would win over the one the
        // build writes for the node (metal-iso, or its netboot URL), and talos.platform is the ISO's.
        reader.error_at("kernel_args", "'" + key + "': " + arg.substr(0, arg.find('=')) +
                                       "= is written by the build (docs/proxmox.md); a second one would win over it");
      }
    }
    return args;
  }

 private:
  Diagnostics& diagnostics_;
  const ProfileCheckOptions& options_;
};

const std::set<std::string, std::less<>> rpi_node_keys{"name", "system", "network", "rke2", "boot", "overlays"};
const std::set<std::string, std::less<>> rpi_node_rke2_keys{"role", "server", "token", "config", "registries"};

void read_rpi5(const ConfigNode& tree, Profile& profile, Diagnostics& diagnostics, const ProfileCheckOptions& options) {
  {
    ConfigMapReader top(tree, diagnostics, "");
    // Unknown keys are reported once, by the per-node reader below.
    for (const auto& entry : tree.entries) {
      if (entry.key != "base") top.ignore(entry.key);
    }
    profile.base = read_artifact_source(top, "base", true, ChecksumPolicy::required);
  }

  // Profile-wide settings without the node list: what each node starts from.
  ConfigNode common = tree;
  common.erase("nodes");
  std::vector<std::pair<std::string, ConfigNode>> node_trees;
  if (const ConfigNode* nodes = tree.find("nodes")) {
    if (!nodes->is_sequence() || nodes->items.empty()) {
      diagnostics.error(nodes->location, "'nodes' must be a non-empty list of nodes, each with a 'name'");
    } else {
      std::set<std::string> names;
      for (std::size_t i = 0; i < nodes->items.size(); ++i) {
        const ConfigNode& node = nodes->items[i];
        std::string path = "nodes[" + std::to_string(i) + "]";
        if (!node.is_map()) {
          diagnostics.error(node.location, "'" + path + "' must be a map with at least 'name'");
          continue;
        }
        const ConfigNode* name = node.find("name");
        if (name == nullptr || !name->is_scalar() || !is_dns_label(name->scalar)) {
          diagnostics.error(name ? name->location : node.location,
                            "'" + path + ".name' must be a lowercase DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-'): it names the image "
                            "and is the default hostname");
          continue;
        }
        if (!names.insert(name->scalar).second) {
          diagnostics.error(name->location, "node '" + name->scalar + "' is listed twice");
          continue;
        }
        bool ok = true;
        for (const auto& entry : node.entries) {
          if (!rpi_node_keys.contains(entry.key)) {
            diagnostics.error(entry.key_location, "unknown key '" + path + "." + entry.key +
                                                      "' (a node may set: boot, name, network, overlays, rke2, system)");
            ok = false;
          }
        }
        if (const ConfigNode* rke2 = node.find("rke2"); rke2 != nullptr && rke2->is_map()) {
          const ConfigNode* shared = common.find("rke2");
          for (const auto& entry : rke2->entries) {
            // A node may repeat the profile's value (`rke2: {<<: *rke2, role: agent}`): nothing differs.
            const ConfigNode* profile_value = shared != nullptr && shared->is_map() ? shared->find(entry.key) : nullptr;
            if (profile_value != nullptr && same_config_value(*profile_value, entry.value)) continue;
            if (!rpi_node_rke2_keys.contains(entry.key)) {
              diagnostics.error(entry.key_location, "'" + path + ".rke2." + entry.key +
                                                        "' cannot differ per node (nodes share the RKE2 release; a "
                                                        "node may set config, registries, role, server, token)");
              ok = false;
            }
          }
        }
        if (!ok) {
          // The profile-wide settings are still read for this node, so their problems are reported
          // in the same run (a profile whose only node is refused reported nothing else).
          node_trees.emplace_back(name->scalar, common);
          continue;
        }
        ConfigNode overrides = node;
        overrides.erase("name");
        node_trees.emplace_back(name->scalar, merge_config(common, overrides));
      }
    }
  } else {
    node_trees.emplace_back(profile.name, common);
  }

  // A mistake in a profile-wide setting shows up once per node; it is reported once, and only problems
  // that some nodes have and others do not are tagged with the node's name.
  std::vector<std::pair<std::string, Diagnostics>> per_node;
  std::map<std::string, std::size_t> occurrences;
  for (const auto& [name, node_tree] : node_trees) {
    Diagnostics node_diagnostics;
    ProfileReader node_reader(node_diagnostics, options);
    Rpi5Node node;
    {
      ConfigMapReader top(node_tree, node_diagnostics, "");
      for (const auto& key : {"kind", "name", "description", "base", "output", "nodes"}) top.ignore(key);
      node.name = name;
      node.system = node_reader.read_system(top, name);
      node.network = node_reader.read_network(top);
      node.rke2 = node_reader.read_rke2(top);
      node.boot = node_reader.read_boot(top);
      node.overlays = node_reader.read_overlays(top);
    }
    for (const auto& d : node_diagnostics.all()) ++occurrences[d.str()];
    per_node.emplace_back(name, std::move(node_diagnostics));
    profile.rpi_nodes.push_back(std::move(node));
  }
  std::set<std::string> reported;
  for (const auto& [name, node_diagnostics] : per_node) {
    for (const auto& d : node_diagnostics.all()) {
      std::string key = d.str();
      if (!reported.insert(key).second) continue;
      bool everywhere = occurrences[key] == per_node.size();
      std::string message = everywhere ? d.message : d.message + " (node " + name + ")";
      if (d.severity == Diagnostic::Severity::error) {
        diagnostics.error(d.where, message);
      } else {
        diagnostics.warning(d.where, message);
      }
    }
  }
}

void read_talos(const ConfigNode& tree, Profile& profile, Diagnostics& diagnostics, const ProfileCheckOptions& options) {
  ProfileReader reader(diagnostics, options);
  ConfigMapReader top(tree, diagnostics, "");
  for (const auto& key : {"kind", "name", "description", "output"}) top.ignore(key);
  std::vector<TalosPatch> common_patches;
  std::vector<std::string> common_args;
  if (auto talos = top.map("talos", true)) {
    auto& t = profile.talos;
    t.version = talos->string("version");
    if (t.version && !t.version->starts_with("v")) {
      talos->error_at("version", "'talos.version' must look like v1.12.0, got '" + *t.version + "'");
    }
    t.iso = read_artifact_source(*talos, "iso", false, ChecksumPolicy::required);
    t.kernel = read_artifact_source(*talos, "kernel", false, ChecksumPolicy::required);
    t.initramfs = read_artifact_source(*talos, "initramfs", false, ChecksumPolicy::required);
    if (!talos->has("iso") && !(talos->has("kernel") && talos->has("initramfs"))) {
      talos->error("'talos' needs 'iso', or both 'kernel' and 'initramfs'");
    }
    if (talos->has("kernel") != talos->has("initramfs")) {
      talos->error("'talos.kernel' and 'talos.initramfs' go together");
    }
    t.config = read_secret_reference(*talos, "config");
    if (t.config && options.check_secrets) check_secret(*t.config, diagnostics);
    t.outputs = talos->string_list("outputs").value_or(std::vector<std::string>{"config-iso"});
    for (const auto& o : t.outputs) {
      if (o != "config-iso" && o != "iso" && o != "netboot") {
        talos->error_at("outputs", "'talos.outputs' entries must be config-iso, iso or netboot, got '" + o + "'");
      }
    }
    if (t.outputs.empty()) {
      // An empty list would build nothing; leaving the key out means the default, config-iso.
      talos->error_at("outputs", "'talos.outputs' is empty: list at least one of config-iso, iso, netboot "
                                 "(or leave it out for config-iso)");
    } else if ((t.outputs.size() > 1 || t.outputs.front() != "config-iso") && !t.iso && !(t.kernel && t.initramfs)) {
      talos->error("these outputs need a Talos ISO or kernel + initramfs");
    }
    t.netboot_url = talos->string("netboot_url");
    if (t.netboot_url && !is_plain_http_url(*t.netboot_url)) {
      // The build appends /<node>/config.yaml: a query or fragment would swallow that path, a blank
      // splits the kernel argument, and Talos fetches http(s) only.
      talos->error_at("netboot_url", "'talos.netboot_url' must be an http:// or https:// URL without spaces, query "
                                     "(?) or fragment (#), got '" + log_escape(*t.netboot_url) + "'");
    }
    if (std::find(t.outputs.begin(), t.outputs.end(), "netboot") != t.outputs.end() && !t.netboot_url) {
      talos->error("the netboot output needs 'talos.netboot_url' (where `aggrik8s-image serve` answers, e.g. "
                   "http://10.0.0.2:8080)");
    }
    common_patches = reader.read_patches(*talos);
    common_args = reader.read_kernel_args(*talos);
    talos->finish();
  }
  reader.read_output(top, profile.output);
  if (profile.output.ephemeral || !profile.output.disk_images) {
    // Talos needs its own system disk (STATE, EPHEMERAL): its rebuild-on-reboot is `serve`'s
    // `mode: ephemeral` for a talos profile (docs/netboot.md), not an output of the build.
    top.error_at("output", "'output.ephemeral' and 'output.disk_images' are for kind rpi5-rke2; for Talos nodes that come "
                           "back fresh on every boot use mode: ephemeral in serve's nodes file");
  }
  if (profile.output.http_boot) {
    top.error_at("output", "'output.http_boot' is for kind rpi5-rke2 (the Raspberry Pi 5 bootloader's HTTP boot); Talos nodes "
                           "netboot with talos.outputs: [netboot]");
  }

  if (auto proxmox = top.map("proxmox")) {
    ProxmoxSettings p;
    std::string url = proxmox->string("api_url", true).value_or("");
    std::string why;
    if (auto base = proxmox_api_base_url(url, &why)) {
      p.api_url = *base;
    } else if (!url.empty()) {
      proxmox->error_at("api_url", "'proxmox.api_url' " + why + ", e.g. https://pve1.example:8006, got '" + url + "'");
    }
    p.token_id = proxmox->string("token_id", true).value_or("");
    if (!p.token_id.empty() && !is_proxmox_token_id(p.token_id)) {
      proxmox->error_at("token_id", "'proxmox.token_id' must look like USER@REALM!TOKENID (e.g. builder@pve!images), "
                                    "got '" + p.token_id + "'");
    }
    auto secret = read_secret_reference(*proxmox, "token_secret", true);
    if (secret && options.check_secrets) check_secret(*secret, diagnostics);
    p.node = proxmox->string("node", true).value_or("");
    if (!p.node.empty() && !is_proxmox_node_name(p.node)) {
      proxmox->error_at("node", "'proxmox.node' must be a Proxmox node name such as pve1, got '" + p.node + "'");
    }
    p.storage = proxmox->string("storage", true).value_or("");
    if (!p.storage.empty() && !is_proxmox_storage_id(p.storage)) {
      proxmox->error_at("storage", "'proxmox.storage' must be a storage ID such as local (a letter, then letters, "
                                   "digits, '-', '_', '.'), got '" + p.storage + "'");
    }
    if (auto verify = proxmox->boolean("verify_tls")) p.verify_tls = *verify;
    p.ca_file = proxmox->path_value("ca_file");
    if (auto fingerprint = proxmox->string("fingerprint")) {
      p.fingerprint = normalize_certificate_fingerprint(*fingerprint);
      if (!p.fingerprint) {
        proxmox->error_at("fingerprint", "'proxmox.fingerprint' must be a SHA-256 certificate fingerprint, 32 hex "
                                         "bytes as the web UI shows it (AA:BB:...), got '" + *fingerprint + "'");
      }
    }
    if (p.ca_file && p.fingerprint) {
      proxmox->error_at("fingerprint", "'proxmox' may have 'ca_file' or 'fingerprint', not both");
    }
    if (!p.verify_tls && (p.ca_file || p.fingerprint)) {
      proxmox->error_at("verify_tls", "'proxmox.verify_tls: false' turns off what 'ca_file'/'fingerprint' would check");
    }
    proxmox->finish();
    if (secret) {
      p.token_secret = *secret;
      profile.proxmox = p;
    }
  }

  std::set<std::string> names;
  std::set<std::string> macs;
  std::set<std::string> uuids;
  std::vector<SourceLocation> node_locations;  // of each entry of profile.talos_nodes
  top.list("nodes", [&](const ConfigNode& item, const std::string& path) {
    ConfigMapReader node_reader(item, diagnostics, path);
    if (!node_reader.valid()) {
      diagnostics.error(item.location, "'" + path + "' must be a map with at least 'name'");
      return;
    }
    TalosNode node;
    node.name = node_reader.string("name", true).value_or("");
    if (!node.name.empty() && !is_dns_label(node.name)) {
      node_reader.error_at("name", "'" + path + ".name' must be a lowercase DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-'), got '" + node.name + "'");
    }
    if (!node.name.empty() && !names.insert(node.name).second) {
      node_reader.error_at("name", "node '" + node.name + "' is listed twice");
    }
    if (auto mac = node_reader.string("mac")) {
      node.mac = normalize_mac(*mac);
      if (!node.mac) node_reader.error_at("mac", "'" + path + ".mac' must look like 52:54:00:12:34:56, got '" + *mac + "'");
      else if (!macs.insert(*node.mac).second) node_reader.error_at("mac", "MAC " + *node.mac + " is used by two nodes");
    }
    if (auto uuid = node_reader.string("uuid")) {
      node.uuid = normalize_uuid(*uuid);
      if (!node.uuid) node_reader.error_at("uuid", "'" + path + ".uuid' must be an SMBIOS UUID (8-4-4-4-12 hex), got '" + *uuid + "'");
      else if (!uuids.insert(*node.uuid).second) node_reader.error_at("uuid", "UUID " + *node.uuid + " is used by two nodes");
    }
    std::optional<std::string> hostname = node_reader.string("hostname");
    node.hostname = hostname.value_or(node.name);
    node.hostname_given = hostname.has_value();
    // Without its own hostname the node's is its name, whose error is already reported. Talos takes a
    // FQDN (HostnameConfig's own example is controlplane1.example.org): every label a DNS label.
    auto is_dns_name = [](const std::string& name) {
      if (name.empty() || name.size() > 253) return false;
      for (std::size_t at = 0;;) {
        std::size_t dot = name.find('.', at);
        if (!is_dns_label(name.substr(at, dot == std::string::npos ? std::string::npos : dot - at))) return false;
        if (dot == std::string::npos) return true;
        at = dot + 1;
      }
    };
    if (hostname && !is_dns_name(node.hostname)) {
      node_reader.error_at("hostname", "'" + path + ".hostname' must be a lowercase DNS name: labels of 1-63 a-z, 0-9, '-' (not starting or ending with '-'), joined by '.', got '" + node.hostname + "'");
    }
    node.addresses = node_reader.string_list("addresses").value_or(std::vector<std::string>{});
    for (const auto& a : node.addresses) {
      if (ip_cidr_family(a) == 0) {
        node_reader.error_at("addresses", "'" + path + ".addresses' entries must be CIDR addresses like 10.0.0.21/24 or "
                                          "fd00:55::21/64 (prefix 0-32 for IPv4, 0-128 for IPv6), got '" + a + "'");
      }
    }
    // One address or a list (a dual-stack node: one IPv4 and one IPv6 gateway, one default route each).
    node.gateways = scalar_or_list(node_reader, "gateway", "an address");
    check_gateways(node_reader, "gateway", node.gateways);
    node.install_disk = node_reader.string("install_disk");
    if (node.install_disk && !node.install_disk->starts_with("/dev/")) {
      node_reader.error_at("install_disk", "'" + path + ".install_disk' must be a device path such as /dev/sda");
    }
    node.config = read_secret_reference(node_reader, "config");
    if (node.config && options.check_secrets) check_secret(*node.config, diagnostics);
    node.patches = common_patches;
    for (auto& p : reader.read_patches(node_reader)) node.patches.push_back(std::move(p));
    node.kernel_args = common_args;
    for (auto& a : reader.read_kernel_args(node_reader)) node.kernel_args.push_back(std::move(a));
    node_reader.finish();
    if (!node.config && !profile.talos.config) {
      diagnostics.error(item.location, "node '" + node.name + "' has no machine config: set 'talos.config' or '" + path + ".config'");
    }
    profile.talos_nodes.push_back(std::move(node));
    node_locations.push_back(item.location);
  }, true);
  top.finish();
  // Only the iso and netboot outputs boot a command line of the node's own; the shared boot ISO of a
  // config-iso build carries the arguments every node has. A node's own argument with neither would
  // be built into nothing (a warning at build time said the iso and netboot outputs carry it).
  const auto& outputs = profile.talos.outputs;
  bool per_node_command_line = std::find(outputs.begin(), outputs.end(), "iso") != outputs.end() ||
                               std::find(outputs.begin(), outputs.end(), "netboot") != outputs.end();
  for (std::size_t i = 0; i < profile.talos_nodes.size() && !per_node_command_line; ++i) {
    for (const auto& arg : profile.talos_nodes[i].kernel_args) {
      bool shared = std::all_of(profile.talos_nodes.begin(), profile.talos_nodes.end(), [&](const TalosNode& other) {
        return std::find(other.kernel_args.begin(), other.kernel_args.end(), arg) != other.kernel_args.end();
      });
      if (!shared) {
        diagnostics.error(node_locations[i], "node '" + profile.talos_nodes[i].name + "': kernel argument " + arg +
                                                 " is not every node's, so the shared boot ISO cannot carry it, and "
                                                 "talos.outputs has neither iso nor netboot (which boot a node's own "
                                                 "command line): add one, or give every node the argument");
      }
    }
  }
}

}  // namespace

const char* to_string(ProfileKind kind) {
  switch (kind) {
    case ProfileKind::rpi5_rke2: return "rpi5-rke2";
    case ProfileKind::talos_iso: return "talos-iso";
  }
  return "?";
}

std::vector<ArtifactSource> Profile::inputs() const {
  std::vector<ArtifactSource> out;
  if (base) out.push_back(*base);
  for (const auto* source : {&talos.iso, &talos.kernel, &talos.initramfs}) {
    if (*source) out.push_back(**source);
  }
  return out;
}

std::vector<std::string> Profile::node_names() const {
  std::vector<std::string> out;
  for (const auto& n : rpi_nodes) out.push_back(n.name);
  for (const auto& n : talos_nodes) out.push_back(n.name);
  return out;
}

ConfigNode load_profile_tree(const fs::path& path, Diagnostics& diagnostics) {
  LoadedTree loaded;
  std::vector<fs::path> stack;
  if (!load_with_extends(path, diagnostics, stack, loaded)) return {};
  return loaded.tree;
}

std::optional<Profile> load_profile(const fs::path& path, Diagnostics& diagnostics, const ProfileCheckOptions& options) {
  return load_profile_with_nodes(path, nullptr, diagnostics, options);
}

std::optional<Profile> load_profile_with_nodes(const fs::path& path, const NodesFromProfileTree& nodes_for,
                                               Diagnostics& diagnostics, const ProfileCheckOptions& options) {
  std::size_t errors_before = diagnostics.error_count();
  LoadedTree loaded;
  std::vector<fs::path> stack;
  if (!load_with_extends(path, diagnostics, stack, loaded)) return std::nullopt;
  if (nodes_for) {
    ConfigNode nodes = nodes_for(loaded.tree);
    loaded.tree.set("nodes", std::move(nodes));
  }

  Profile profile;
  profile.file = path;
  profile.extends.assign(loaded.files.begin(), loaded.files.end() - 1);
  const ConfigNode& tree = loaded.tree;
  {
    ConfigMapReader top(tree, diagnostics, "");
    // A site written `kind: Site` (as Kubernetes spells kinds) is read as a profile: say what it lacks.
    if (const ConfigNode* written = tree.find("kind"); written != nullptr && written->is_scalar() && written->scalar != "site") {
      std::string lower = written->scalar;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower != written->scalar && (lower == "site" || lower == "rpi5-rke2" || lower == "talos-iso")) {
        top.error_at("kind", "'kind' is lowercase: '" + lower + "', not '" + written->scalar + "'");
      }
    }
    auto kind = top.one_of("kind", {"rpi5-rke2", "talos-iso"}, true);
    profile.name = top.string("name").value_or(path.stem().string());
    if (!is_dns_label(profile.name)) {
      top.error_at("name", "'name' must be a lowercase DNS label (1-63 of a-z, 0-9, '-'; it names the output), got '" + profile.name + "'");
    }
    profile.description = top.string("description").value_or("");
    // The kind-specific reader below reports unknown keys.
    for (const auto& entry : tree.entries) top.ignore(entry.key);
    top.finish();
    if (!kind) return std::nullopt;
    profile.kind = *kind == "talos-iso" ? ProfileKind::talos_iso : ProfileKind::rpi5_rke2;
  }
  if (profile.kind == ProfileKind::rpi5_rke2) {
    read_rpi5(tree, profile, diagnostics, options);
    ConfigMapReader top(tree, diagnostics, "");
    for (const auto& entry : tree.entries) top.ignore(entry.key);
    ProfileReader(diagnostics, options).read_output(top, profile.output);
    top.finish();
  } else {
    read_talos(tree, profile, diagnostics, options);
  }
  if (diagnostics.error_count() > errors_before) return std::nullopt;
  return profile;
}

}  // namespace aggrik8s::builder
