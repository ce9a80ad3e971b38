#include "builder/talos/talos_iso_image.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wpedantic"
// libisofs hands the image out as a libburn `struct burn_source`; this asks it to define the struct.
#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisoburn/xorriso.h>
#include <libisofs/libisofs.h>
#pragma GCC diagnostic pop

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"

// Declared as libisoburn.h (API since 0.2.0) declares it: that header wants libburn.h included first,
// and this file does without libburn.h (it takes `struct burn_source` from libisofs.h, above).
extern "C" int isoburn_set_msgs_submit(int (*msgs_submit)(void* handle, int error_code, char msg_text[], int os_errno,
                                                          char severity[], int flag),
                                       void* submit_handle, int submit_flag, int flag);

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t sector = 2048;
constexpr std::size_t first_descriptor = 16 * sector;

std::string trim_right(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

struct ArchiveReadHandle {
  archive* handle = archive_read_new();
  ArchiveReadHandle(const fs::path& iso) {
    if (handle == nullptr) throw Error("libarchive: out of memory");
    archive_read_support_format_iso9660(handle);
    if (archive_read_open_filename(handle, iso.c_str(), 1 << 16) != ARCHIVE_OK) {
      std::string message = archive_error_string(handle) ? archive_error_string(handle) : "unknown error";
      archive_read_free(handle);
      throw Error("cannot read " + iso.string() + " as an ISO 9660 image: " + message);
    }
  }
  ~ArchiveReadHandle() { archive_read_free(handle); }
  ArchiveReadHandle(const ArchiveReadHandle&) = delete;
  ArchiveReadHandle& operator=(const ArchiveReadHandle&) = delete;
  std::string error() const { return archive_error_string(handle) ? archive_error_string(handle) : "unknown error"; }
};

// libarchive names entries "boot/x" in some images and "./config.yaml" in others: one spelling.
std::string entry_path(archive_entry* entry) {
  std::string path = archive_entry_pathname(entry);
  while (path.starts_with("./")) path.erase(0, 2);
  while (path.starts_with("/")) path.erase(0, 1);
  return path;
}

// "2025-05-15 00:00:00 UTC" as the 16 digits ISO 9660 and xorriso's -volume_date uuid use.
std::string iso_date_digits(std::int64_t epoch) {
  auto t = static_cast<std::time_t>(epoch);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y%m%d%H%M%S00", &tm);
  return buffer;
}

void ensure_libisofs() {
  static std::once_flag once;
  static int status = 0;
  std::call_once(once, [] { status = iso_init(); });
  if (status < 0) throw Error("libisofs cannot be initialised (error " + std::to_string(status) + ")");
}

// libisoburn's xorriso keeps process-wide library state: one run at a time.
std::mutex xorriso_mutex;

}  // namespace

IsoVolumeInfo parse_iso_volume_descriptors(std::string_view descriptors) {
  IsoVolumeInfo info;
  bool primary = false;
  for (std::size_t offset = 0; offset + sector <= descriptors.size(); offset += sector) {
    std::string_view d = descriptors.substr(offset, sector);
    if (d.substr(1, 5) != "CD001") break;
    auto type = static_cast<unsigned char>(d[0]);
    if (type == 255) break;
    if (type == 1) {
      primary = true;
      info.volume_id = trim_right(std::string(d.substr(40, 32)));
      info.modification_date = std::string(d.substr(830, 16));
    } else if (type == 2) {
      std::string_view escapes = d.substr(88, 32);
      if (escapes.starts_with("%/@") || escapes.starts_with("%/C") || escapes.starts_with("%/E")) info.joliet = true;
    }
  }
  if (!primary) throw Error("no ISO 9660 primary volume descriptor (not an ISO image)");
  return info;
}

IsoVolumeInfo read_iso_volume_info(const fs::path& iso) {
  std::ifstream in(iso, std::ios::binary);
  if (!in) throw Error("cannot open " + iso.string());
  std::string bytes(16 * sector, '\0');
  in.seekg(static_cast<std::streamoff>(first_descriptor));
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  try {
    return parse_iso_volume_descriptors(bytes);
  } catch (const Error& e) {
    throw Error(iso.string() + ": " + e.what());
  }
}

std::vector<std::string> list_iso_files(const fs::path& iso) {
  ArchiveReadHandle reader(iso);
  std::vector<std::string> files;
  archive_entry* entry = nullptr;
  int status = ARCHIVE_OK;
  while ((status = archive_read_next_header(reader.handle, &entry)) == ARCHIVE_OK) {
    if (archive_entry_filetype(entry) == AE_IFREG) files.push_back(entry_path(entry));
  }
  if (status != ARCHIVE_EOF) throw Error(iso.string() + ": " + reader.error());
  return files;
}

void extract_iso_files(const fs::path& iso, const std::vector<std::pair<std::string, fs::path>>& wanted) {
  std::map<std::string, fs::path> remaining(wanted.begin(), wanted.end());
  ArchiveReadHandle reader(iso);
  archive_entry* entry = nullptr;
  int status = ARCHIVE_OK;
  while (!remaining.empty() && (status = archive_read_next_header(reader.handle, &entry)) == ARCHIVE_OK) {
    auto it = remaining.find(entry_path(entry));
    if (it == remaining.end() || archive_entry_filetype(entry) != AE_IFREG) continue;
    FileDescriptor out(::open(it->second.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out) throw_system_error("cannot create " + it->second.string(), errno);
    const void* block = nullptr;
    std::size_t size = 0;
    la_int64_t offset = 0;
    int r = ARCHIVE_OK;
    while ((r = archive_read_data_block(reader.handle, &block, &size, &offset)) == ARCHIVE_OK) {
      pwrite_all(out.get(), static_cast<std::uint64_t>(offset), block, size, it->second.string());
    }
    if (r != ARCHIVE_EOF) throw Error(iso.string() + ": cannot read /" + it->first + ": " + reader.error());
    remaining.erase(it);
  }
  if (status != ARCHIVE_OK && status != ARCHIVE_EOF) throw Error(iso.string() + ": " + reader.error());
  if (!remaining.empty()) {
    std::string missing;
    for (const auto& [path, dest] : remaining) missing += (missing.empty() ? "/" : ", /") + path;
    throw Error(iso.string() + " has no " + missing + ": this does not look like a Talos ISO");
  }
}

namespace {

// The file's data into `out`, sized once from its entry (a ~50 MiB UKI grew a string by doubling).
template <typename Bytes>
Bytes read_iso_entry(const fs::path& iso, const std::string& path_in_image) {
  ArchiveReadHandle reader(iso);
  archive_entry* entry = nullptr;
  while (archive_read_next_header(reader.handle, &entry) == ARCHIVE_OK) {
    if (path_in_image != entry_path(entry)) continue;
    Bytes out;
    if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > 0) out.reserve(static_cast<std::size_t>(archive_entry_size(entry)));
    const void* block = nullptr;
    std::size_t size = 0;
    la_int64_t offset = 0;
    int r = ARCHIVE_OK;
    while ((r = archive_read_data_block(reader.handle, &block, &size, &offset)) == ARCHIVE_OK) {
      if (offset < 0 || static_cast<std::uint64_t>(offset) < out.size()) {
        throw Error(iso.string() + ": cannot read /" + path_in_image + ": its data blocks go backwards");
      }
      out.resize(static_cast<std::size_t>(offset));  // a hole reads as zeros
      const auto* bytes = static_cast<const typename Bytes::value_type*>(block);
      out.insert(out.end(), bytes, bytes + size);
    }
    if (r != ARCHIVE_EOF) throw Error(iso.string() + ": cannot read /" + path_in_image + ": " + reader.error());
    return out;
  }
  throw Error(iso.string() + " has no /" + path_in_image + ": this does not look like a Talos ISO");
}

}  // namespace

std::string read_iso_text_file(const fs::path& iso, const std::string& path_in_image) {
  return read_iso_entry<std::string>(iso, path_in_image);
}

std::vector<std::uint8_t> read_iso_file(const fs::path& iso, const std::string& path_in_image) {
  return read_iso_entry<std::vector<std::uint8_t>>(iso, path_in_image);
}

void write_config_iso(const fs::path& output, const std::string& config_yaml, const ConfigIsoOptions& options) {
  ensure_libisofs();
  std::int64_t epoch = options.source_date_epoch.value_or(static_cast<std::int64_t>(std::time(nullptr)));
  auto when = static_cast<std::time_t>(epoch);

  IsoImage* image = nullptr;
  if (iso_image_new(options.volume_id.c_str(), &image) < 0) throw Error("libisofs: cannot create an image");
  std::unique_ptr<IsoImage, void (*)(IsoImage*)> image_owner(image, iso_image_unref);
  iso_image_set_application_id(image, "AGGRIK8S-IMAGE");
  IsoDir* root = iso_image_get_root(image);
  auto* root_node = reinterpret_cast<IsoNode*>(root);
  for (auto set : {iso_node_set_mtime, iso_node_set_atime, iso_node_set_ctime}) set(root_node, when);
  iso_node_set_uid(root_node, 0);
  iso_node_set_gid(root_node, 0);

  // The stream takes ownership of a malloc'd copy and frees it.
  auto* bytes = static_cast<unsigned char*>(std::malloc(config_yaml.size() + 1));
  if (bytes == nullptr) throw Error("out of memory");
  std::memcpy(bytes, config_yaml.data(), config_yaml.size());
  IsoStream* stream = nullptr;
  if (iso_memory_stream_new(bytes, config_yaml.size(), &stream) < 0) {
    std::free(bytes);
    throw Error("libisofs: cannot create a memory stream");
  }
  IsoFile* file = nullptr;
  if (iso_tree_add_new_file(root, "config.yaml", stream, &file) < 0) throw Error("libisofs: cannot add config.yaml");
  auto* file_node = reinterpret_cast<IsoNode*>(file);
  // 0400 as Talos' own config file; Rock Ridge carries the mode, Joliet and plain ISO 9660 cannot.
  iso_node_set_permissions(file_node, 0400);
  iso_node_set_uid(file_node, 0);
  iso_node_set_gid(file_node, 0);
  for (auto set : {iso_node_set_mtime, iso_node_set_atime, iso_node_set_ctime}) set(file_node, when);

  IsoWriteOpts* opts = nullptr;
  if (iso_write_opts_new(&opts, 0) < 0) throw Error("libisofs: cannot create write options");
  std::unique_ptr<IsoWriteOpts, void (*)(IsoWriteOpts*)> opts_owner(opts, iso_write_opts_free);
  iso_write_opts_set_iso_level(opts, 3);
  iso_write_opts_set_rockridge(opts, 1);
  iso_write_opts_set_joliet(opts, 1);
  // Talos looks for the label `metal-iso` as written (mkisofs -volid keeps case); strict ISO 9660
  // would upper-case it to METAL_ISO.
  iso_write_opts_set_relaxed_vol_atts(opts, 1);
  iso_write_opts_set_always_gmt(opts, 1);
  iso_write_opts_set_replace_mode(opts, 0, 0, 0, 0);
  iso_write_opts_set_replace_timestamps(opts, 0);
  iso_write_opts_set_dir_rec_mtime(opts, 1);
  std::string uuid = iso_date_digits(epoch);
  iso_write_opts_set_pvd_times(opts, when, when, 0, 0, uuid.data());

  burn_source* source = nullptr;
  if (iso_image_create_burn_source(image, opts, &source) < 0) throw Error("libisofs: cannot start writing the image");
  auto release = [](burn_source* s) {
    s->free_data(s);
    std::free(s);
  };
  std::unique_ptr<burn_source, decltype(release)> source_owner(source, release);

  // The config ISO holds the machine config (its PKI): a new file, made 0600 whatever the umask. A file
  // already there under this name (a leftover 0644 .partial, a planted symlink) is removed, not
  // reused: O_TRUNC kept its mode, and followed its link out of the output directory.
  std::error_code ignored;
  fs::remove(output, ignored);
  FileDescriptor out(::open(output.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) throw_system_error("cannot create " + output.string(), errno);
  if (::fchmod(out.get(), 0600) != 0) throw_system_error("cannot set the mode of " + output.string(), errno);
  unsigned char buffer[sector];
  for (;;) {
    int n = source->read_xt(source, buffer, static_cast<int>(sizeof buffer));
    if (n < 0) throw Error("libisofs failed while writing " + output.string());
    if (n == 0) break;
    write_all(out.get(), buffer, static_cast<std::size_t>(n), output.string());
  }
}

namespace {

std::uint32_t le32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) | (static_cast<std::uint32_t>(p[2]) << 16) |
         (static_cast<std::uint32_t>(p[3]) << 24);
}
std::uint64_t le64(const unsigned char* p) { return le32(p) | (static_cast<std::uint64_t>(le32(p + 4)) << 32); }

}  // namespace

std::optional<IsoEfiPartition> find_iso_efi_partition(const fs::path& iso) {
  FileDescriptor in(::open(iso.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_file_error("cannot open " + iso.string(), iso, errno);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw_system_error("cannot stat " + iso.string(), errno);
  auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 1024) return std::nullopt;
  unsigned char head[1024];
  pread_exactly(in.get(), 0, head, sizeof head, iso.string());
  // GPT (the hybrid layout of grub-mkrescue and Talos' imager): header at LBA 1 of 512-byte sectors.
  static const unsigned char efi_system[16] = {0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11,
                                               0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b};
  if (std::memcmp(head + 512, "EFI PART", 8) == 0) {
    std::uint64_t entries_lba = le64(head + 512 + 72);
    std::uint32_t count = le32(head + 512 + 80);
    std::uint32_t entry_size = le32(head + 512 + 84);
    if (entry_size >= 128 && count <= 1024 && entries_lba * 512 + std::uint64_t{count} * entry_size <= file_size) {
      std::vector<unsigned char> entries(std::size_t{count} * entry_size);
      pread_exactly(in.get(), entries_lba * 512, entries.data(), entries.size(), iso.string());
      for (std::uint32_t i = 0; i < count; ++i) {
        const unsigned char* e = entries.data() + std::size_t{i} * entry_size;
        if (std::memcmp(e, efi_system, 16) != 0) continue;
        std::uint64_t first = le64(e + 32);
        std::uint64_t last = le64(e + 40);
        if (last < first || (last + 1) * 512 > file_size) {
          throw Error(iso.string() + ": GPT entry " + std::to_string(i + 1) + " (EFI system partition) has LBAs " +
                      std::to_string(first) + "-" + std::to_string(last) + " outside the image");
        }
        char type[33];
        for (int b = 0; b < 16; ++b) std::snprintf(type + 2 * b, 3, "%02x", efi_system[b]);
        return IsoEfiPartition{i + 1, first * 512, (last - first + 1) * 512, type};
      }
      return std::nullopt;
    }
  }
  if (head[510] == 0x55 && head[511] == 0xaa) {
    for (std::uint32_t i = 0; i < 4; ++i) {
      const unsigned char* e = head + 446 + 16 * i;
      if (e[4] != 0xef) continue;
      std::uint64_t start = le32(e + 8);
      std::uint64_t sectors = le32(e + 12);
      if ((start + sectors) * 512 > file_size) {
        throw Error(iso.string() + ": MBR partition " + std::to_string(i + 1) + " (type 0xef) runs past the end of the image");
      }
      return IsoEfiPartition{i + 1, start * 512, sectors * 512, "0xef"};
    }
  }
  return std::nullopt;
}

void extract_iso_efi_partition(const fs::path& iso, const IsoEfiPartition& partition, const fs::path& output) {
  FileDescriptor in(::open(iso.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_file_error("cannot open " + iso.string(), iso, errno);
  FileDescriptor out(::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) throw_system_error("cannot create " + output.string(), errno);
  std::vector<unsigned char> buffer(1 << 20);
  for (std::uint64_t done = 0; done < partition.size;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), partition.size - done));
    pread_exactly(in.get(), partition.offset + done, buffer.data(), n, iso.string());
    write_all(out.get(), buffer.data(), n, output.string());
    done += n;
  }
}

void remaster_iso(const IsoRemaster& request) {
  IsoVolumeInfo input = read_iso_volume_info(request.input);
  std::error_code ignored;
  // xorriso appends a session to an existing image: the output must start empty. It is created
  // here, with its final mode, so a config never sits in a world-readable file.
  fs::remove(request.output, ignored);
  {
    FileDescriptor created(::open(request.output.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                                  static_cast<mode_t>(request.output_mode)));
    if (!created) throw_system_error("cannot create " + request.output.string(), errno);
    ::fchmod(created.get(), static_cast<mode_t>(request.output_mode));
  }

  std::vector<std::string> args{"aggrik8s-image",
                                // xorriso's default fsyncs a stdio: output every 16 MiB, which made a
                                // 128 MiB remaster 4x slower; no other output of a build is synced
                                // either (the rename makes it visible, not durable).
                                "-stdio_sync", "off",
                                // xorriso looks at the finished write only when its progress messages
                                // are due, once per wall-clock second by default: a remaster that wrote
                                // its 127 MiB in 0.2 s returned 0.1-0.9 s later (docs/benchmarks.md,
                                // Talos). 0.1 s is the shortest interval it takes.
                                "-pacifier", "interval=0.1",
                                "-report_about", "SORRY",
                                "-abort_on", "FAILURE",
                                "-indev", request.input.string(),
                                "-outdev", request.output.string(),
                                "-boot_image", "any", "replay",
                                // grub-mkrescue adds an HFS+/APM hybrid for Intel Macs; libisofs 1.5.4
                                // cannot lay it out again once files change ("GPT partitions overlap"),
                                // and no Proxmox VM boots through it. El Torito, MBR, GPT and the EFI
                                // partition are kept.
                                "-hfsplus", "off"};
  if (input.joliet) args.insert(args.end(), {"-joliet", "on"});
  if (request.volume_id) args.insert(args.end(), {"-volid", *request.volume_id});
  if (request.source_date_epoch) {
    // What xorriso does for SOURCE_DATE_EPOCH, without reading this process's environment. The
    // volume's uuid date stays the input's (replay sets it): GRUB's embedded config searches for it.
    args.insert(args.end(), {"-iso_nowtime", "=" + std::to_string(*request.source_date_epoch),
                             "-volume_date", "all_file_dates", "set_to_mtime",
                             "-boot_image", "any", "gpt_disk_guid=volume_date_uuid"});
  }
  for (const auto& file : request.files) {
    if (request.source_date_epoch) {
      timespec times[2];
      times[0].tv_sec = static_cast<time_t>(*request.source_date_epoch);
      times[0].tv_nsec = 0;
      times[1] = times[0];
      if (::utimensat(AT_FDCWD, file.source.c_str(), times, 0) != 0) {
        throw_system_error("cannot set the time of " + file.source.string(), errno);
      }
    }
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", file.mode);
    args.insert(args.end(), {"-map", file.source.string(), file.path_in_image, "-chmod", mode, file.path_in_image, "--",
                             "-chown", "0", file.path_in_image, "--", "-chgrp", "0", file.path_in_image, "--"});
    if (file.sort_weight != 0) {
      args.insert(args.end(), {"-find", file.path_in_image, "-exec", "sort_weight", std::to_string(file.sort_weight), "--"});
    }
  }
  if (request.efi_partition) {
    // After replay, which appended the input's partition: the same slot and type, the edited image.
    args.insert(args.end(), {"-append_partition", std::to_string(request.efi_partition->number), request.efi_partition->type,
                             request.efi_partition_image.string()});
  }
  args.insert(args.end(), {"-commit", "-end"});

  std::lock_guard lock(xorriso_mutex);
  // No signal handlers of libburn's: by default Xorriso_startup_libraries installs them for good, so
  // a Ctrl-C after the first remaster ended in libburn's exit(1), past the build's own cleanup
  // (core/interrupt_cleanup.hpp), and left the outputs and the work directory behind. An image file is
  // not an optical drive that a sudden end could leave stuck.
  Xorriso__preset_signal_behavior(0, 0);
  XorrisO* xorriso = nullptr;
  std::string progname = "aggrik8s-image";
  if (Xorriso_new(&xorriso, progname.data(), 0) <= 0) throw Error("libisoburn: cannot create a xorriso object");
  struct Destroy {
    XorrisO*& x;
    ~Destroy() {
      // Xorriso_startup_libraries makes this object libisoburn's process-wide message handler
      // (isoburn_set_msgs_submit), and Xorriso_destroy frees it without taking it back: from then
      // on, any message libisoburn sends without a drive of its own would go to freed memory, and
      // the next remaster in this process starts with that pointer in place. Taken back here, such
      // messages go to libburn's queue until the next object sets its own. (Found looking into a
      // SIGSEGV in the second remaster of one process, seen once in CI under load and not
      // reproduced since: that this was its cause is not established.)
      isoburn_set_msgs_submit(nullptr, nullptr, 0, 0);
      Xorriso_destroy(&x, 0);
    }
  } destroy{xorriso};
  if (Xorriso_startup_libraries(xorriso, 0) <= 0) throw Error("libisoburn: cannot start the libraries");

  int handle = 0;
  Xorriso_push_outlists(xorriso, &handle, 3);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  int index = 1;
  int status = Xorriso_interpreter(xorriso, static_cast<int>(argv.size()), argv.data(), &index, 0);
  int exit_value = Xorriso_make_return_value(xorriso, 0);
  Xorriso_lsT* results = nullptr;
  Xorriso_lsT* infos = nullptr;
  Xorriso_pull_outlists(xorriso, handle, &results, &infos, 0);
  std::string messages;
  for (Xorriso_lsT* item = infos; item != nullptr; item = Xorriso_lst_get_next(item, 0)) {
    std::string line = Xorriso_lst_get_text(item, 0);
    if (line.find("FAILURE") != std::string::npos || line.find("SORRY") != std::string::npos ||
        line.find("FATAL") != std::string::npos) {
      messages += "\n  " + trim_right(line.substr(0, line.find_last_not_of("\n") + 1));
    }
  }
  Xorriso_lst_destroy_all(&results, 0);
  Xorriso_lst_destroy_all(&infos, 0);
  if (status <= 0 || exit_value != 0 || fs::file_size(request.output, ignored) == 0) {
    fs::remove(request.output, ignored);
    throw Error("remastering " + request.input.string() + " failed (xorriso status " + std::to_string(status) +
                ", exit value " + std::to_string(exit_value) + "):" + (messages.empty() ? " no message" : messages));
  }
}

std::string iso_writer_version() {
  int major = 0, minor = 0, micro = 0;
  Xorriso__version(&major, &minor, &micro);
  return "libisoburn " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(micro);
}

}  // namespace aggrik8s::builder
