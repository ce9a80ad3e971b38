#include "disk/image_compressor.hpp"

#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "disk/bmap.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/file_descriptor.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t chunk_size = 1 << 20;

// Hands out the image in chunks of at most 1 MiB, in order. Holes come from a shared zero buffer,
// so a mostly empty 8 GiB image costs reads only for its data.
class SparseImageReader {
 public:
  explicit SparseImageReader(const std::filesystem::path& path) : name_(path.string()), buffer_(chunk_size) {
    fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_) throw_file_error("cannot open image " + name_, name_, errno);
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) throw_system_error("cannot stat image " + name_, errno);
    size_ = static_cast<std::uint64_t>(info.st_size);
    extents_ = list_data_extents(fd_.get(), size_, name_);
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }

  // Empty at the end of the image.
  std::span<const std::uint8_t> next() {
    if (position_ >= size_) return {};
    while (extent_ < extents_.size() && extents_[extent_].offset + extents_[extent_].length <= position_) ++extent_;
    bool in_data = extent_ < extents_.size() && extents_[extent_].offset <= position_;
    std::uint64_t region_end = extent_ == extents_.size() ? size_
                               : in_data                  ? extents_[extent_].offset + extents_[extent_].length
                                                          : extents_[extent_].offset;
    std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, region_end - position_));
    if (!in_data) {
      static const std::vector<std::uint8_t> zeros(chunk_size);
      position_ += length;
      return {zeros.data(), length};
    }
    pread_exactly(fd_.get(), position_, buffer_.data(), length, name_);
    position_ += length;
    return {buffer_.data(), length};
  }

  bool at_end() const { return position_ >= size_; }
  std::uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  FileDescriptor fd_;
  std::uint64_t size_ = 0;
  std::vector<DataExtent> extents_;
  std::size_t extent_ = 0;
  std::uint64_t position_ = 0;
  std::vector<std::uint8_t> buffer_;
};

// The compressed file: written sequentially, hashed and counted on the way.
class CompressedOutput {
 public:
  // `name` is what errors call the file: the name it will have once published.
  CompressedOutput(const std::filesystem::path& path, std::string name, unsigned permissions) : name_(std::move(name)) {
    // A compressed node image holds its secrets: never written through a symlink, and `permissions`
    // also when a file of that name was there (O_CREAT's mode applies only to a new file).
    fd_ = FileDescriptor(
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, static_cast<mode_t>(permissions)));
    if (!fd_) throw_system_error("cannot create " + name_, errno);
    // Only a regular file: a device given as the output (/dev/full in tests) keeps its mode.
    struct stat info {};
    if (::fstat(fd_.get(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::fchmod(fd_.get(), static_cast<mode_t>(permissions)) != 0) {
      throw_system_error("cannot set the mode of " + name_, errno);
    }
  }
  void write(std::span<const std::uint8_t> data) {
    hash_.update(data);
    size_ += data.size();
    write_all(fd_.get(), data.data(), data.size(), name_);
  }
  void close() {
    if (::close(fd_.release()) != 0) throw_system_error("cannot write " + name_, errno);
  }
  std::uint64_t size() const { return size_; }
  Sha256Digest finish_hash() { return hash_.finish(); }

 private:
  std::string name_;
  FileDescriptor fd_;
  Sha256 hash_;
  std::uint64_t size_ = 0;
};

void compress_zstd(SparseImageReader& image, CompressedOutput& output, int level, unsigned threads,
                   ProgressTask& progress) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> context(ZSTD_createCCtx(), &ZSTD_freeCCtx);
  if (!context) throw Error("cannot compress " + image.name() + ": out of memory for the zstd encoder");
  auto check = [&](std::size_t code, const char* what) {
    if (ZSTD_isError(code) != 0) {
      throw Error("cannot compress " + image.name() + " with zstd (" + what + "): " + ZSTD_getErrorName(code));
    }
  };
  check(ZSTD_CCtx_setParameter(context.get(), ZSTD_c_compressionLevel, level), "level");
  check(ZSTD_CCtx_setParameter(context.get(), ZSTD_c_checksumFlag, 1), "checksum");
  std::size_t workers = ZSTD_CCtx_setParameter(context.get(), ZSTD_c_nbWorkers, static_cast<int>(threads));
  if (ZSTD_isError(workers) != 0) {
    log::warning("libzstd was built without multithreading; compressing ", image.name(),
                 " in one thread (output differs from a multithreaded build's)");
  }
  check(ZSTD_CCtx_setPledgedSrcSize(context.get(), image.size()), "image size");

  std::vector<std::uint8_t> out_buffer(std::max<std::size_t>(ZSTD_CStreamOutSize(), chunk_size));
  auto drain = [&](ZSTD_inBuffer& in, ZSTD_EndDirective directive) {
    for (;;) {
      ZSTD_outBuffer out{out_buffer.data(), out_buffer.size(), 0};
      std::size_t remaining = ZSTD_compressStream2(context.get(), &out, &in, directive);
      check(remaining, "stream");
      output.write({out_buffer.data(), out.pos});
      bool done = directive == ZSTD_e_end ? remaining == 0 : in.pos == in.size;
      if (done) return;
    }
  };
  // The last chunk goes in with ZSTD_e_end, as the zstd CLI sends it. Ending with a separate empty
  // call instead appends an empty last block when the image is a multiple of the job size, which
  // makes the output depend on how the input was chunked (and differ from `zstd -T0`).
  for (;;) {
    auto chunk = image.next();
    bool last = image.at_end();
    ZSTD_inBuffer in{chunk.data(), chunk.size(), 0};
    drain(in, last ? ZSTD_e_end : ZSTD_e_continue);
    progress.add(chunk.size());
    if (last) return;
  }
}

void compress_xz(SparseImageReader& image, CompressedOutput& output, int level, unsigned threads,
                 std::uint64_t block_size, ProgressTask& progress) {
  struct Stream {
    lzma_stream s{};
    ~Stream() { lzma_end(&s); }
  } stream;
  lzma_mt mt{};
  mt.threads = threads;
  mt.block_size = block_size;
  mt.preset = static_cast<std::uint32_t>(level);
  mt.check = LZMA_CHECK_CRC64;  // xz's default
  lzma_ret ret = lzma_stream_encoder_mt(&stream.s, &mt);
  if (ret != LZMA_OK) {
    throw Error("cannot compress " + image.name() + " with xz: liblzma could not start its encoder (error " +
                std::to_string(static_cast<int>(ret)) + (ret == LZMA_MEM_ERROR ? ", out of memory)" : ")"));
  }
  std::vector<std::uint8_t> out_buffer(chunk_size);
  stream.s.next_out = out_buffer.data();
  stream.s.avail_out = out_buffer.size();
  lzma_action action = LZMA_RUN;
  std::size_t pending_progress = 0;
  for (;;) {
    if (stream.s.avail_in == 0 && action == LZMA_RUN) {
      progress.add(pending_progress);
      auto chunk = image.next();
      pending_progress = chunk.size();
      if (chunk.empty()) {
        action = LZMA_FINISH;
      } else {
        stream.s.next_in = chunk.data();
        stream.s.avail_in = chunk.size();
      }
    }
    ret = lzma_code(&stream.s, action);
    if (stream.s.avail_out == 0 || ret == LZMA_STREAM_END) {
      output.write({out_buffer.data(), out_buffer.size() - stream.s.avail_out});
      stream.s.next_out = out_buffer.data();
      stream.s.avail_out = out_buffer.size();
    }
    if (ret == LZMA_STREAM_END) return;
    if (ret != LZMA_OK) {
      throw Error("cannot compress " + image.name() + " with xz: liblzma error " + std::to_string(static_cast<int>(ret)) +
                  (ret == LZMA_MEM_ERROR ? " (out of memory)" : ""));
    }
  }
}

}  // namespace

const char* file_extension(ImageCompressionFormat format) {
  return format == ImageCompressionFormat::xz ? ".xz" : ".zst";
}

ImageCompressor::ImageCompressor(ImageCompressionOptions options) : options_(options) {
  if (options_.format == ImageCompressionFormat::zstd) {
    int level = options_.level.value_or(3);
    if (level < 1 || level > 19) throw Error("zstd level " + std::to_string(level) + " is out of range (1 to 19)");
    options_.level = level;
  } else {
    int level = options_.level.value_or(6);
    if (level < 0 || level > 9) throw Error("xz level " + std::to_string(level) + " is out of range (0 to 9)");
    options_.level = level;
  }
}

CompressedImage ImageCompressor::compress(const std::filesystem::path& image, const std::filesystem::path& output) const {
  const std::filesystem::path partial = output.string() + ".partial";
  RemovedOnInterrupt unfinished(partial);
  try {
    CompressedImage result = compress_unpublished(image, partial, output);
    std::error_code error;
    std::filesystem::rename(partial, output, error);
    if (error) throw Error("cannot rename " + partial.string() + " to " + output.string() + ": " + error.message());
    return result;
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw;
  }
}

CompressedImage ImageCompressor::compress_unpublished(const std::filesystem::path& image, const std::filesystem::path& file,
                                                      const std::filesystem::path& shown_as) const {
  SparseImageReader reader(image);
  unsigned threads = options_.threads != 0 ? options_.threads : std::max(1u, std::thread::hardware_concurrency());
  CompressedImage result;
  result.image_size = reader.size();
  CompressedOutput writer(file, shown_as.string(), options_.file_permissions);
  ProgressTask progress("compress " + shown_as.filename().string(), reader.size());
  if (options_.format == ImageCompressionFormat::zstd) {
    compress_zstd(reader, writer, *options_.level, threads, progress);
  } else {
    compress_xz(reader, writer, *options_.level, threads, options_.xz_block_size, progress);
  }
  writer.close();
  progress.finish();
  result.compressed_size = writer.size();
  result.sha256 = writer.finish_hash();
  return result;
}

}  // namespace aggrik8s
