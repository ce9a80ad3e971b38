#include "disk/image_decompressor.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/image_decoder_errors.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t block_size = 4096;
constexpr std::size_t input_chunk_size = 1 << 20;
// Large enough that a pwrite per run of data blocks is cheap, small enough to stay in L2/L3 while
// the zero check walks it right after the decoder wrote it.
constexpr std::size_t staging_size = 4 << 20;

bool is_zero_block(const std::uint8_t* data, std::size_t length) {
  static const std::array<std::uint8_t, block_size> zeros{};
  return std::memcmp(data, zeros.data(), length) == 0;
}

// Receives the decoded image in order and writes only 4 KiB blocks that are not all zero, at their
// offsets; the file gets its final size from ftruncate, so skipped blocks are holes. Decoders write
// straight into space() to save a copy.
//
// The zero check and the writes run on a thread of their own, a few staging buffers behind the
// decoder: decoding (liblzma's and libzstd's output copy, gzip and bzip2 entirely) and moving the
// bytes into the page cache then take turns on two cores instead of on one.
class SparseImageWriter {
 public:
  SparseImageWriter(int fd, std::string name) : fd_(fd), name_(std::move(name)) {
    for (auto& buffer : buffers_) buffer.data.resize(staging_size);
    writer_ = std::thread([this] { write_buffers(); });
  }
  ~SparseImageWriter() { stop(); }
  SparseImageWriter(const SparseImageWriter&) = delete;
  SparseImageWriter& operator=(const SparseImageWriter&) = delete;

  std::span<std::uint8_t> space() {
    if (used_ == staging_size) submit();
    Buffer& buffer = current();
    return {buffer.data.data() + used_, staging_size - used_};
  }
  void commit(std::size_t bytes) { used_ += bytes; }

  // Zeros that the source already knows are zeros (holes of a raw image): no bytes to check.
  void skip_zeros(std::uint64_t count) {
    if (used_ > 0) {
      // Pad the buffered tail to a block boundary so that flushing keeps writes block-aligned.
      std::uint64_t to_boundary = (block_size - size() % block_size) % block_size;
      std::size_t pad = static_cast<std::size_t>(std::min(count, to_boundary));
      std::memset(current().data.data() + used_, 0, pad);
      used_ += pad;
      count -= pad;
      if (count == 0) return;
      submit();
    }
    base_ += count;
  }

  void finish() {
    if (used_ > 0) submit();
    stop();
    if (error_) std::rethrow_exception(error_);
    if (::ftruncate(fd_, static_cast<off_t>(base_)) != 0) {
      throw_system_error("cannot set the size of " + name_ + " to " + std::to_string(base_) + " bytes", errno);
    }
  }

  std::uint64_t size() const { return base_ + used_; }
  std::uint64_t written_bytes() const { return written_; }

 private:
  struct Buffer {
    std::vector<std::uint8_t> data;
    std::size_t used = 0;
    std::uint64_t base = 0;  // file offset of data[0]; always block-aligned
  };

  Buffer& current() { return buffers_[filled_ % buffers_.size()]; }

  // Hands the current buffer to the writer thread and waits until the next one is free.
  void submit() {
    Buffer& buffer = current();
    buffer.used = used_;
    buffer.base = base_;
    base_ += used_;
    used_ = 0;
    std::unique_lock lock(mutex_);
    ++filled_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return filled_ - written_buffers_ < buffers_.size() || failed_; });
    // The writer has stopped: report its error now rather than decoding the rest for nothing.
    if (failed_) std::rethrow_exception(error_);
  }

  void stop() {
    if (!writer_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    writer_.join();
  }

  void write_buffers() {
    try {
      for (;;) {
        {
          std::unique_lock lock(mutex_);
          changed_.wait(lock, [&] { return written_buffers_ < filled_ || stopping_; });
          if (written_buffers_ == filled_) return;
        }
        write_buffer(buffers_[written_buffers_ % buffers_.size()]);
        {
          std::lock_guard lock(mutex_);
          ++written_buffers_;
        }
        changed_.notify_all();
      }
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
      failed_ = true;
      changed_.notify_all();
    }
  }

  void write_buffer(const Buffer& buffer) {
    std::optional<std::size_t> run_start;
    for (std::size_t at = 0; at < buffer.used; at += block_size) {
      std::size_t length = std::min(block_size, buffer.used - at);
      if (!is_zero_block(buffer.data.data() + at, length)) {
        if (!run_start) run_start = at;
      } else if (run_start) {
        write_run(buffer, *run_start, at);
        run_start.reset();
      }
    }
    if (run_start) write_run(buffer, *run_start, buffer.used);
  }

  void write_run(const Buffer& buffer, std::size_t from, std::size_t to) {
    std::size_t done = from;
    while (done < to) {
      ssize_t n = ::pwrite(fd_, buffer.data.data() + done, to - done, static_cast<off_t>(buffer.base + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_system_error("cannot write " + name_ + " at offset " + std::to_string(buffer.base + done), errno);
      }
      done += static_cast<std::size_t>(n);
    }
    written_ += to - from;
  }

  int fd_;
  std::string name_;
  // Decoder side: the buffer being filled is buffers_[filled_ % size], with used_ bytes in it.
  std::array<Buffer, 4> buffers_;
  std::size_t used_ = 0;
  std::uint64_t base_ = 0;  // file offset of the current buffer's first byte; always block-aligned
  // Shared, under mutex_: buffers handed over and buffers written.
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t filled_ = 0;
  std::uint64_t written_buffers_ = 0;
  bool stopping_ = false;
  bool failed_ = false;
  std::exception_ptr error_;
  std::uint64_t written_ = 0;  // writer thread only until it is joined
  std::thread writer_;
};

class InputFile {
 public:
  explicit InputFile(const std::filesystem::path& path) : name_(path.string()) {
    fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_) throw_system_error("cannot open " + name_, errno);
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) throw_system_error("cannot stat " + name_, errno);
    size_ = static_cast<std::uint64_t>(info.st_size);
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  // 0 at the end of the file.
  std::size_t read(std::span<std::uint8_t> buffer) {
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno != EINTR) throw_system_error("cannot read " + name_, errno);
    }
  }
  int fd() const { return fd_.get(); }
  std::uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  FileDescriptor fd_;
  std::uint64_t size_ = 0;
};

void copy_raw(InputFile& input, SparseImageWriter& writer, ProgressTask& progress) {
  for (const auto& extent : list_data_extents(input.fd(), input.size(), input.name())) {
    writer.skip_zeros(extent.offset - writer.size());
    std::uint64_t end = extent.offset + extent.length;
    while (writer.size() < end) {
      auto space = writer.space();
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(space.size(), end - writer.size()));
      ssize_t n = ::pread(input.fd(), space.data(), want, static_cast<off_t>(writer.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_system_error("cannot read " + input.name(), errno);
      if (n == 0) throw Error(input.name() + " shrank while it was being copied");
      writer.commit(static_cast<std::size_t>(n));
      progress.set_done(writer.size());
    }
  }
  writer.skip_zeros(input.size() - writer.size());
}

void decode_xz(InputFile& input, SparseImageWriter& writer, ProgressTask& progress, unsigned threads) {
  struct Stream {
    lzma_stream s{};
    ~Stream() { lzma_end(&s); }
  } stream;
  lzma_mt mt{};
  // Concatenated streams are valid .xz (xz itself accepts them); pixz and parallel tools write them.
  mt.flags = LZMA_CONCATENATED;
  mt.threads = threads;
  // xz's own default: threads may use up to a quarter of RAM; past that liblzma falls back to one
  // thread instead of failing (memlimit_stop is the hard limit, left unlimited as xz does).
  std::uint64_t physical_memory = lzma_physmem();
  mt.memlimit_threading = physical_memory != 0 ? physical_memory / 4 : (std::uint64_t{1} << 30);
  mt.memlimit_stop = UINT64_MAX;
  lzma_ret ret = lzma_stream_decoder_mt(&stream.s, &mt);
  if (ret != LZMA_OK) throw decompression_error(input.name(), "xz", lzma_error_text(ret));

  std::vector<std::uint8_t> in(input_chunk_size);
  bool end_of_input = false;
  for (;;) {
    if (stream.s.avail_in == 0 && !end_of_input) {
      std::size_t n = input.read(in);
      end_of_input = n == 0;
      stream.s.next_in = in.data();
      stream.s.avail_in = n;
      progress.add(n);
    }
    auto space = writer.space();
    stream.s.next_out = space.data();
    stream.s.avail_out = space.size();
    ret = lzma_code(&stream.s, end_of_input ? LZMA_FINISH : LZMA_RUN);
    writer.commit(space.size() - stream.s.avail_out);
    if (ret == LZMA_STREAM_END) return;
    if (ret != LZMA_OK) throw decompression_error(input.name(), "xz", lzma_error_text(ret));
  }
}

void decode_zstd(InputFile& input, SparseImageWriter& writer, ProgressTask& progress) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  if (!context) throw Error("cannot decompress " + input.name() + ": out of memory for the zstd decoder");
  // Images are compressed with long-distance matching (--long) by some distributions; allow their
  // windows up to 2 GiB. Inputs are sha256-pinned, so a huge window is not an attack surface here.
  ZSTD_DCtx_setParameter(context.get(), ZSTD_d_windowLogMax, 31);

  std::vector<std::uint8_t> in_buffer(ZSTD_DStreamInSize());
  ZSTD_inBuffer in{in_buffer.data(), 0, 0};
  std::size_t frame_remainder = 0;  // 0 at a frame boundary
  bool any_input = false;
  for (;;) {
    if (in.pos == in.size) {
      std::size_t n = input.read(in_buffer);
      if (n == 0) break;
      any_input = true;
      in = ZSTD_inBuffer{in_buffer.data(), n, 0};
      progress.add(n);
    }
    bool output_full = false;
    do {
      auto space = writer.space();
      ZSTD_outBuffer out{space.data(), space.size(), 0};
      frame_remainder = ZSTD_decompressStream(context.get(), &out, &in);
      if (ZSTD_isError(frame_remainder) != 0) {
        throw decompression_error(input.name(), "zstd",
                            std::string("the compressed data is corrupt (zstd: ") + ZSTD_getErrorName(frame_remainder) + ")");
      }
      writer.commit(out.pos);
      output_full = out.pos == out.size;
      // A full output buffer may hide more pending output, except at a frame's end (0): calling
      // again then would only start waiting for the next frame's header and report it missing.
    } while (in.pos < in.size || (output_full && frame_remainder != 0));
  }
  if (!any_input) throw decompression_error(input.name(), "zstd", "the file is empty");
  if (frame_remainder != 0) {
    throw decompression_error(input.name(), "zstd",
                        "the file is truncated: it ends in the middle of a zstd frame");
  }
}

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveDeleter>;

void read_archive_entry_data(archive* a, const std::string& input, const char* format, SparseImageWriter& writer,
                             ProgressTask& progress, bool progress_in_input_bytes) {
  for (;;) {
    auto space = writer.space();
    la_ssize_t n = archive_read_data(a, space.data(), space.size());
    if (n < 0) throw decompression_error(input, format, libarchive_error_text(a));
    if (n == 0) return;
    writer.commit(static_cast<std::size_t>(n));
    if (progress_in_input_bytes) {
      progress.set_done(static_cast<std::uint64_t>(std::max<la_int64_t>(0, archive_filter_bytes(a, -1))));
    } else {
      progress.add(static_cast<std::uint64_t>(n));
    }
  }
}

void decode_with_libarchive_filter(const std::filesystem::path& path, const char* format, SparseImageWriter& writer,
                                   ProgressTask& progress) {
  ArchiveReader reader(archive_read_new());
  archive_read_support_filter_all(reader.get());
  archive_read_support_format_raw(reader.get());
  if (archive_read_open_filename(reader.get(), path.c_str(), input_chunk_size) != ARCHIVE_OK) {
    throw decompression_error(path.string(), format, libarchive_error_text(reader.get()));
  }
  archive_entry* entry = nullptr;
  int status = archive_read_next_header(reader.get(), &entry);
  if (status != ARCHIVE_OK && status != ARCHIVE_WARN) {
    throw decompression_error(path.string(), format, libarchive_error_text(reader.get()));
  }
  read_archive_entry_data(reader.get(), path.string(), format, writer, progress, true);
}

ArchiveReader open_zip(const std::filesystem::path& path) {
  ArchiveReader reader(archive_read_new());
  // The seekable reader trusts the central directory, as unzip does, and skips entries without
  // decompressing them.
  archive_read_support_format_zip_seekable(reader.get());
  if (archive_read_open_filename(reader.get(), path.c_str(), input_chunk_size) != ARCHIVE_OK) {
    throw decompression_error(path.string(), "zip", libarchive_error_text(reader.get()));
  }
  return reader;
}

// Calls `each(index, entry)` for every entry; stops when it returns false.
template <typename Each>
void for_each_zip_entry(archive* a, const std::string& input, Each each) {
  for (std::size_t index = 0;; ++index) {
    archive_entry* entry = nullptr;
    int status = archive_read_next_header(a, &entry);
    if (status == ARCHIVE_EOF) return;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw decompression_error(input, "zip", libarchive_error_text(a));
    if (!each(index, entry)) return;
  }
}

void decode_zip(const std::filesystem::path& path, SparseImageWriter& writer, ProgressTask& progress) {
  const std::string input = path.string();
  std::vector<std::pair<std::size_t, std::string>> images;
  std::vector<std::string> entries;
  {
    ArchiveReader reader = open_zip(path);
    for_each_zip_entry(reader.get(), input, [&](std::size_t index, archive_entry* entry) {
      const char* raw_name = archive_entry_pathname(entry);
      std::string name = raw_name != nullptr ? raw_name : "";
      entries.push_back(name);
      // macOS Finder adds resource-fork shadows ("__MACOSX/._x.img") that are not images.
      bool finder_shadow = name.starts_with("__MACOSX/") || name.find("/._") != std::string::npos || name.starts_with("._");
      if (archive_entry_filetype(entry) == AE_IFREG && ends_with_ignoring_case(name, ".img") && !finder_shadow) {
        images.emplace_back(index, name);
      }
      return true;
    });
  }
  auto list = [](const auto& names) {
    std::string text;
    for (std::size_t i = 0; i < names.size() && i < 10; ++i) text += (i > 0 ? ", " : "") + names[i];
    if (names.size() > 10) text += ", ... (" + std::to_string(names.size()) + " in all)";
    return text;
  };
  if (images.empty()) {
    throw Error(input + ": the zip archive holds no .img file (it holds: " + (entries.empty() ? "nothing" : list(entries)) + ")");
  }
  if (images.size() > 1) {
    std::vector<std::string> names;
    for (const auto& image : images) names.push_back(image.second);
    throw Error(input + ": the zip archive holds several .img files (" + list(names) +
                "); unpack the one you mean and use it as the base image");
  }
  ArchiveReader reader = open_zip(path);
  for_each_zip_entry(reader.get(), input, [&](std::size_t index, archive_entry* entry) {
    if (index != images.front().first) return true;
    if (archive_entry_size_is_set(entry) != 0) progress.set_total(static_cast<std::uint64_t>(archive_entry_size(entry)));
    log::debug("decompressing ", images.front().second, " from ", input);
    read_archive_entry_data(reader.get(), input, "zip", writer, progress, false);
    return false;
  });
}

}  // namespace

const char* to_string(ImageInputFormat format) {
  switch (format) {
    case ImageInputFormat::raw: return "raw image";
    case ImageInputFormat::xz: return "xz";
    case ImageInputFormat::zstd: return "zstd";
    case ImageInputFormat::gzip: return "gzip";
    case ImageInputFormat::bzip2: return "bzip2";
    case ImageInputFormat::zip: return "zip";
  }
  return "unknown";
}

ImageInputFormat detect_image_input_format(const std::filesystem::path& input) {
  InputFile file(input);
  std::array<std::uint8_t, 6> head{};
  std::size_t have = 0;
  while (have < head.size()) {
    std::size_t n = file.read(std::span(head).subspan(have));
    if (n == 0) break;
    have += n;
  }
  auto starts_with = [&](std::initializer_list<std::uint8_t> magic) {
    return have >= magic.size() && std::equal(magic.begin(), magic.end(), head.begin());
  };
  if (starts_with({0xFD, '7', 'z', 'X', 'Z', 0x00})) return ImageInputFormat::xz;
  if (starts_with({0x28, 0xB5, 0x2F, 0xFD})) return ImageInputFormat::zstd;
  // A zstd skippable frame (magic 0x184D2A50..5F, little-endian) may precede the data frames.
  if (have >= 4 && (head[0] & 0xF0) == 0x50 && head[1] == 0x2A && head[2] == 0x4D && head[3] == 0x18) {
    return ImageInputFormat::zstd;
  }
  if (starts_with({0x1F, 0x8B})) return ImageInputFormat::gzip;
  if (starts_with({'B', 'Z', 'h'})) return ImageInputFormat::bzip2;
  if (starts_with({'P', 'K', 0x03, 0x04}) || starts_with({'P', 'K', 0x05, 0x06}) ||
      starts_with({'P', 'K', 0x07, 0x08})) {
    return ImageInputFormat::zip;
  }
  const std::string name = input.filename().string();
  for (const char* suffix : {".xz", ".zst", ".zstd", ".gz", ".bz2", ".zip"}) {
    if (ends_with_ignoring_case(name, suffix)) {
      std::string hex;
      for (std::size_t i = 0; i < have; ++i) {
        char byte[4];
        std::snprintf(byte, sizeof byte, "%02x", head[i]);
        hex += (i > 0 ? " " : "") + std::string(byte);
      }
      throw Error(input.string() + ": the name ends in " + suffix + " but the content is not in that format (" +
                  (have == 0 ? std::string("the file is empty") : "it starts with bytes " + hex) +
                  "); is it an HTML error page saved by a download?");
    }
  }
  return ImageInputFormat::raw;
}

DecompressedImage ImageDecompressor::decompress(const std::filesystem::path& input,
                                                const std::filesystem::path& output) const {
  DecompressedImage result;
  result.format = detect_image_input_format(input);
  InputFile source(input);
  const std::filesystem::path partial = output.string() + ".partial";
  const std::string partial_name = partial.string();
  FileDescriptor out(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) throw_system_error("cannot create " + partial_name, errno);
  try {
    SparseImageWriter writer(out.get(), partial_name);
    ProgressTask progress("decompress " + input.filename().string(), source.size());
    unsigned threads = options_.threads != 0 ? options_.threads : std::max(1u, std::thread::hardware_concurrency());
    switch (result.format) {
      case ImageInputFormat::raw: copy_raw(source, writer, progress); break;
      case ImageInputFormat::xz: decode_xz(source, writer, progress, threads); break;
      case ImageInputFormat::zstd: decode_zstd(source, writer, progress); break;
      case ImageInputFormat::gzip: decode_with_libarchive_filter(input, "gzip", writer, progress); break;
      case ImageInputFormat::bzip2: decode_with_libarchive_filter(input, "bzip2", writer, progress); break;
      case ImageInputFormat::zip: decode_zip(input, writer, progress); break;
    }
    writer.finish();
    if (::close(out.release()) != 0) throw_system_error("cannot write " + partial_name, errno);
    progress.finish();
    result.size = writer.size();
    result.written_bytes = writer.written_bytes();
    std::error_code error;
    std::filesystem::rename(partial, output, error);
    if (error) throw Error("cannot rename " + partial_name + " to " + output.string() + ": " + error.message());
  } catch (...) {
    out.reset();
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw;
  }
  return result;
}

}  // namespace aggrik8s
