#include "disk/image_stream.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <thread>

#include "disk/image_decoder_errors.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t input_chunk_size = 1 << 20;
constexpr std::size_t discard_chunk_size = 1 << 20;

class StoredFile {
 public:
  explicit StoredFile(const std::filesystem::path& path) : name_(path.string()) {
    fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_) throw_system_error("cannot open " + name_, errno);
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) throw_system_error("cannot stat " + name_, errno);
    if (S_ISDIR(info.st_mode)) throw Error(name_ + " is a directory, not an image");
    size_ = static_cast<std::uint64_t>(info.st_size);
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  std::size_t read(std::span<std::uint8_t> buffer) {
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
      if (n >= 0) {
        consumed_ += static_cast<std::uint64_t>(n);
        return static_cast<std::size_t>(n);
      }
      if (errno != EINTR) throw_system_error("cannot read " + name_, errno);
    }
  }
  int fd() const { return fd_.get(); }
  std::uint64_t size() const { return size_; }
  std::uint64_t consumed() const { return consumed_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  FileDescriptor fd_;
  std::uint64_t size_ = 0;
  std::uint64_t consumed_ = 0;
};

class RawImageStream final : public ImageStream {
 public:
  explicit RawImageStream(const std::filesystem::path& path) : file_(path) {}

  std::size_t read(std::span<std::uint8_t> buffer) override {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), file_.size() - position_));
    std::size_t done = 0;
    while (done < want) {
      ssize_t n = ::pread(file_.fd(), buffer.data() + done, want - done, static_cast<off_t>(position_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_system_error("cannot read " + file_.name() + " at offset " + std::to_string(position_ + done), errno);
      if (n == 0) throw Error(file_.name() + " shrank while it was being read (at offset " + std::to_string(position_ + done) + ")");
      done += static_cast<std::size_t>(n);
    }
    position_ += done;
    return done;
  }
  void skip(std::uint64_t count) override {
    if (count > file_.size() - position_) {
      throw Error(file_.name() + " ends at " + std::to_string(file_.size()) + " bytes, before offset " +
                  std::to_string(position_ + count));
    }
    position_ += count;
  }
  std::optional<std::uint64_t> known_size() const override { return file_.size(); }
  std::optional<std::vector<DataExtent>> data_extents() override {
    return list_data_extents(file_.fd(), file_.size(), file_.name());
  }
  std::uint64_t input_position() const override { return position_; }
  std::uint64_t input_size() const override { return file_.size(); }
  ImageInputFormat format() const override { return ImageInputFormat::raw; }
  const std::string& name() const override { return file_.name(); }

 private:
  StoredFile file_;
};

class XzImageStream final : public ImageStream {
 public:
  XzImageStream(const std::filesystem::path& path, unsigned threads) : file_(path), in_(input_chunk_size) {
    lzma_mt mt{};
    mt.flags = LZMA_CONCATENATED;
    mt.threads = threads;
    // As ImageDecompressor (and xz itself): threads may use up to a quarter of RAM, then liblzma
    // falls back to one thread instead of failing.
    std::uint64_t physical_memory = lzma_physmem();
    mt.memlimit_threading = physical_memory != 0 ? physical_memory / 4 : (std::uint64_t{1} << 30);
    mt.memlimit_stop = UINT64_MAX;
    lzma_ret ret = lzma_stream_decoder_mt(&stream_, &mt);
    if (ret != LZMA_OK) throw decompression_error(file_.name(), "xz", lzma_error_text(ret));
  }
  ~XzImageStream() override { lzma_end(&stream_); }

  std::size_t read(std::span<std::uint8_t> buffer) override {
    if (finished_ || buffer.empty()) return 0;
    stream_.next_out = buffer.data();
    stream_.avail_out = buffer.size();
    while (stream_.avail_out > 0) {
      if (stream_.avail_in == 0 && !end_of_input_) {
        std::size_t n = file_.read(in_);
        end_of_input_ = n == 0;
        stream_.next_in = in_.data();
        stream_.avail_in = n;
      }
      lzma_ret ret = lzma_code(&stream_, end_of_input_ ? LZMA_FINISH : LZMA_RUN);
      if (ret == LZMA_STREAM_END) {
        finished_ = true;
        break;
      }
      if (ret != LZMA_OK) throw decompression_error(file_.name(), "xz", lzma_error_text(ret));
    }
    std::size_t produced = buffer.size() - stream_.avail_out;
    position_ += produced;
    return produced;
  }
  std::uint64_t input_position() const override { return file_.consumed() - stream_.avail_in; }
  std::uint64_t input_size() const override { return file_.size(); }
  ImageInputFormat format() const override { return ImageInputFormat::xz; }
  const std::string& name() const override { return file_.name(); }

 private:
  StoredFile file_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  std::vector<std::uint8_t> in_;
  bool end_of_input_ = false;
  bool finished_ = false;
};

class ZstdImageStream final : public ImageStream {
 public:
  explicit ZstdImageStream(const std::filesystem::path& path)
      : file_(path), context_(ZSTD_createDCtx(), &ZSTD_freeDCtx), in_buffer_(ZSTD_DStreamInSize()) {
    if (!context_) throw Error("cannot decompress " + file_.name() + ": out of memory for the zstd decoder");
    // As ImageDecompressor: allow --long windows up to 2 GiB.
    ZSTD_DCtx_setParameter(context_.get(), ZSTD_d_windowLogMax, 31);
    in_ = ZSTD_inBuffer{in_buffer_.data(), 0, 0};
  }

  std::size_t read(std::span<std::uint8_t> buffer) override {
    ZSTD_outBuffer out{buffer.data(), buffer.size(), 0};
    while (out.pos < out.size && !finished_) {
      if (in_.pos == in_.size && !pending_output_) {
        std::size_t n = file_.read(in_buffer_);
        if (n == 0) {
          if (!any_input_) throw decompression_error(file_.name(), "zstd", "the file is empty");
          if (frame_remainder_ != 0) throw decompression_error(file_.name(), "zstd", "the file is truncated: it ends in the middle of a zstd frame");
          finished_ = true;
          break;
        }
        any_input_ = true;
        in_ = ZSTD_inBuffer{in_buffer_.data(), n, 0};
      }
      std::size_t before = out.pos;
      frame_remainder_ = ZSTD_decompressStream(context_.get(), &out, &in_);
      if (ZSTD_isError(frame_remainder_) != 0) {
        throw decompression_error(file_.name(), "zstd",
                      std::string("the compressed data is corrupt (zstd: ") + ZSTD_getErrorName(frame_remainder_) + ")");
      }
      // A full output buffer may hide more output still inside the decoder (not at a frame's end):
      // the next call must drain it before reading more input.
      pending_output_ = out.pos == out.size && frame_remainder_ != 0 && out.pos > before;
    }
    position_ += out.pos;
    return out.pos;
  }
  std::uint64_t input_position() const override { return file_.consumed() - (in_.size - in_.pos); }
  std::uint64_t input_size() const override { return file_.size(); }
  ImageInputFormat format() const override { return ImageInputFormat::zstd; }
  const std::string& name() const override { return file_.name(); }

 private:
  StoredFile file_;
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context_;
  std::vector<std::uint8_t> in_buffer_;
  ZSTD_inBuffer in_{};
  std::size_t frame_remainder_ = 0;
  bool any_input_ = false;
  bool pending_output_ = false;
  bool finished_ = false;
};

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveDeleter>;

// gzip and bzip2 through libarchive's raw format with its filters; zip through its zip reader (the
// one .img entry; a zip holding several is refused, as the builder refuses it).
class ArchiveImageStream final : public ImageStream {
 public:
  ArchiveImageStream(const std::filesystem::path& path, ImageInputFormat format)
      : path_(path), name_(path.string()), format_(format) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) throw_system_error("cannot stat " + name_, errno);
    size_ = static_cast<std::uint64_t>(info.st_size);
    if (format == ImageInputFormat::zip) {
      open_zip_image();
    } else {
      reader_ = open(false);
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(reader_.get(), &entry);
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw decompression_error(name_, to_string(format_), libarchive_error_text(reader_.get()));
    }
  }

  std::size_t read(std::span<std::uint8_t> buffer) override {
    std::size_t done = 0;
    while (done < buffer.size()) {
      la_ssize_t n = archive_read_data(reader_.get(), buffer.data() + done, buffer.size() - done);
      if (n < 0) throw decompression_error(name_, to_string(format_), libarchive_error_text(reader_.get()));
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    position_ += done;
    return done;
  }
  std::uint64_t input_position() const override {
    return static_cast<std::uint64_t>(std::max<la_int64_t>(0, archive_filter_bytes(reader_.get(), -1)));
  }
  std::uint64_t input_size() const override { return size_; }
  ImageInputFormat format() const override { return format_; }
  const std::string& name() const override { return name_; }

 private:
  ArchiveReader open(bool zip) {
    ArchiveReader reader(archive_read_new());
    if (zip) {
      archive_read_support_format_zip_seekable(reader.get());
    } else {
      archive_read_support_filter_all(reader.get());
      archive_read_support_format_raw(reader.get());
    }
    if (archive_read_open_filename(reader.get(), path_.c_str(), input_chunk_size) != ARCHIVE_OK) {
      throw decompression_error(name_, to_string(format_), libarchive_error_text(reader.get()));
    }
    return reader;
  }

  void open_zip_image() {
    std::vector<std::string> images;
    std::size_t image_index = 0;
    {
      ArchiveReader listing = open(true);
      for (std::size_t index = 0;; ++index) {
        archive_entry* entry = nullptr;
        int status = archive_read_next_header(listing.get(), &entry);
        if (status == ARCHIVE_EOF) break;
        if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw decompression_error(name_, "zip", libarchive_error_text(listing.get()));
        const char* raw_name = archive_entry_pathname(entry);
        std::string entry_name = raw_name != nullptr ? raw_name : "";
        bool finder_shadow = entry_name.starts_with("__MACOSX/") || entry_name.find("/._") != std::string::npos ||
                             entry_name.starts_with("._");
        if (archive_entry_filetype(entry) == AE_IFREG && ends_with_ignoring_case(entry_name, ".img") && !finder_shadow) {
          images.push_back(entry_name);
          image_index = index;
        }
      }
    }
    if (images.size() != 1) {
      throw Error(name_ + ": the zip archive must hold exactly one .img file, it holds " + std::to_string(images.size()));
    }
    reader_ = open(true);
    for (std::size_t index = 0; index <= image_index; ++index) {
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(reader_.get(), &entry);
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw decompression_error(name_, "zip", libarchive_error_text(reader_.get()));
    }
  }

  std::filesystem::path path_;
  std::string name_;
  ImageInputFormat format_;
  std::uint64_t size_ = 0;
  ArchiveReader reader_;
};

}  // namespace

void ImageStream::skip(std::uint64_t count) {
  std::vector<std::uint8_t> discard(static_cast<std::size_t>(std::min<std::uint64_t>(count, discard_chunk_size)));
  while (count > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(count, discard.size()));
    std::size_t n = read(std::span(discard).first(want));
    if (n == 0) {
      throw Error(name() + ": the image ends at " + std::to_string(position()) + " bytes, before offset " +
                  std::to_string(position() + count));
    }
    count -= n;
  }
}

std::size_t read_fully(ImageStream& stream, std::span<std::uint8_t> buffer) {
  std::size_t done = 0;
  while (done < buffer.size()) {
    std::size_t n = stream.read(buffer.subspan(done));
    if (n == 0) break;
    done += n;
  }
  return done;
}

std::unique_ptr<ImageStream> open_image_stream(const std::filesystem::path& path, const ImageStreamOptions& options) {
  ImageInputFormat format = detect_image_input_format(path);
  unsigned threads = options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  switch (format) {
    case ImageInputFormat::raw: return std::make_unique<RawImageStream>(path);
    case ImageInputFormat::xz: return std::make_unique<XzImageStream>(path, threads);
    case ImageInputFormat::zstd: return std::make_unique<ZstdImageStream>(path);
    case ImageInputFormat::gzip:
    case ImageInputFormat::bzip2:
    case ImageInputFormat::zip: return std::make_unique<ArchiveImageStream>(path, format);
  }
  throw Error(path.string() + ": unknown image format");
}

}  // namespace aggrik8s
