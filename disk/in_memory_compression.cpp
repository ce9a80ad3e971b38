#include "disk/in_memory_compression.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <memory>

#include "core/error.hpp"
#include "disk/image_decoder_errors.hpp"

namespace aggrik8s {
namespace {

struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

}  // namespace

std::string decompress_in_memory(std::string_view input, std::size_t max_bytes, const std::string& what) {
  std::unique_ptr<archive, ArchiveReadDeleter> reader(archive_read_new());
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_raw(reader.get());
  // libarchive's raw format refuses an empty input; an empty file decompresses to nothing.
  if (input.empty()) return {};
  if (archive_read_open_memory(reader.get(), input.data(), input.size()) != ARCHIVE_OK) {
    throw Error(what + ": " + libarchive_error_text(reader.get()));
  }
  archive_entry* entry = nullptr;
  if (archive_read_next_header(reader.get(), &entry) != ARCHIVE_OK) throw Error(what + ": " + libarchive_error_text(reader.get()));
  std::string out;
  char buffer[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(reader.get(), buffer, sizeof buffer);
    if (n < 0) throw Error(what + ": corrupt or truncated compressed data (" + libarchive_error_text(reader.get()) + ")");
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
      throw Error(what + ": decompresses to more than " + std::to_string(max_bytes) + " bytes (the limit for this file)");
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

std::string gzip_in_memory(std::string_view input, int level) {
  if (level < 1 || level > 9) throw Error("gzip level " + std::to_string(level) + " is not 1..9");
  std::unique_ptr<archive, ArchiveWriteDeleter> writer(archive_write_new());
  auto check = [&](int status, const char* doing) {
    if (status != ARCHIVE_OK) throw Error(std::string("gzip: ") + doing + ": " + libarchive_error_text(writer.get()));
  };
  // The raw format writes one entry's data with no archive framing: a plain .gz stream.
  check(archive_write_set_format_raw(writer.get()), "raw format");
  check(archive_write_add_filter_gzip(writer.get()), "gzip filter");
  // "!timestamp" leaves MTIME 0 (libarchive writes the clock otherwise); no file name is written.
  check(archive_write_set_filter_option(writer.get(), "gzip", "timestamp", nullptr), "timestamp option");
  check(archive_write_set_filter_option(writer.get(), "gzip", "compression-level", std::to_string(level).c_str()),
        "compression level");
  // No padding of the last block to the 10 KiB tar block size.
  check(archive_write_set_bytes_in_last_block(writer.get(), 1), "block size");
  std::string out;
  out.resize(input.size() + input.size() / 8 + 65536);
  std::size_t used = 0;
  check(archive_write_open_memory(writer.get(), out.data(), out.size(), &used), "open");
  std::unique_ptr<archive_entry, EntryDeleter> entry(archive_entry_new());
  archive_entry_set_pathname(entry.get(), "data");
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(input.size()));
  check(archive_write_header(writer.get(), entry.get()), "header");
  std::size_t done = 0;
  while (done < input.size()) {
    la_ssize_t n = archive_write_data(writer.get(), input.data() + done, input.size() - done);
    if (n <= 0) throw Error("gzip: write: " + libarchive_error_text(writer.get()));
    done += static_cast<std::size_t>(n);
  }
  check(archive_write_close(writer.get()), "close");
  out.resize(used);
  return out;
}

}  // namespace aggrik8s
