#include "disk/image_stream.hpp"

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
#include <thread>
#include <utility>

#include "disk/image_decoder_errors.hpp"
#include "core/error.hpp"
#include "core/positional_io.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t input_chunk_size = 1 << 20;
constexpr std::size_t discard_chunk_size = 1 << 20;

// The stored file an image is decoded from, opened once: its first bytes tell the format, then the
// decoder reads it in order (a raw image at offsets, to skip its holes).
class ImageInputFile {
 public:
  explicit ImageInputFile(const std::filesystem::path& path) : path_(path), name_(path.string()) {
    // O_NONBLOCK: opening a FIFO nobody writes to would otherwise wait forever before the check below.
    fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd_) throw input_system_error("cannot open", path_, errno);
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) throw input_system_error("cannot stat", path_, errno);
    if (S_ISDIR(info.st_mode)) throw ImageInputError("", path_, " is a directory, not an image");
    // The format is read from the first bytes by offset, a raw image's size and sparse ranges from the
    // file: a pipe has none of them ("Illegal seek" said nothing useful).
    if (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode)) {
      throw ImageInputError("", path_, std::string(" is a ") + (S_ISFIFO(info.st_mode) ? "pipe" : "socket") +
                                           ", not an image file: images are read by offset; give the file itself, or its http(s):// URL");
    }
    int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) throw input_system_error("cannot set up", path_, errno);
    size_ = static_cast<std::uint64_t>(info.st_size);
    ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }

  ImageInputFormat format() const {
    std::array<std::uint8_t, image_format_magic_size> head{};
    return image_input_format_of(std::span(head).first(read_at(head, 0)), path_);
  }

  // The next bytes in order; 0 at the end of the file.
  std::size_t read(std::span<std::uint8_t> buffer) {
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
      if (n >= 0) {
        consumed_ += static_cast<std::uint64_t>(n);
        return static_cast<std::size_t>(n);
      }
      if (errno != EINTR) throw input_system_error("cannot read", path_, errno);
    }
  }
  // Fills `buffer` from `offset` unless the file ends first; returns the bytes read.
  std::size_t read_at(std::span<std::uint8_t> buffer, std::uint64_t offset) const {
    return pread_loop(fd_.get(), offset, buffer.data(), buffer.size(), [&](int err, std::uint64_t at) {
      return input_system_error("cannot read", path_, err, " at offset " + std::to_string(at));
    });
  }
  // Back to the start, for a reader (libarchive) that reads the file through fd() itself.
  void rewind() {
    if (::lseek(fd_.get(), 0, SEEK_SET) != 0) throw input_system_error("cannot seek in", path_, errno);
  }

  int fd() const { return fd_.get(); }
  std::uint64_t size() const { return size_; }
  std::uint64_t consumed() const { return consumed_; }
  const std::filesystem::path& path() const { return path_; }
  const std::string& name() const { return name_; }

 private:
  std::filesystem::path path_;
  std::string name_;
  FileDescriptor fd_;
  std::uint64_t size_ = 0;
  std::uint64_t consumed_ = 0;
};

class RawImageStream final : public ImageStream {
 public:
  explicit RawImageStream(ImageInputFile file) : file_(std::move(file)) {}

  std::size_t read(std::span<std::uint8_t> buffer) override {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), file_.size() - position_));
    std::size_t done = file_.read_at(buffer.first(want), position_);
    if (done < want) {
      throw ImageInputError("", file_.path(),
                            " shrank while it was being read (at offset " + std::to_string(position_ + done) + ")");
    }
    position_ += done;
    return done;
  }
  void skip(std::uint64_t count) override {
    if (count > file_.size() - position_) {
      throw ImageInputError("", file_.path(), " ends at " + std::to_string(file_.size()) + " bytes, before offset " +
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
  ImageInputFile file_;
};

class XzImageStream final : public ImageStream {
 public:
  XzImageStream(ImageInputFile file, unsigned threads) : file_(std::move(file)), in_(input_chunk_size) {
    lzma_mt mt{};
    // Concatenated streams are valid .xz (xz itself accepts them); pixz and parallel tools write them.
    mt.flags = LZMA_CONCATENATED;
    mt.threads = threads;
    // xz's own default: threads may use up to a quarter of RAM; past that liblzma falls back to one
    // thread instead of failing (memlimit_stop is the hard limit, left unlimited as xz does).
    std::uint64_t physical_memory = lzma_physmem();
    mt.memlimit_threading = physical_memory != 0 ? physical_memory / 4 : (std::uint64_t{1} << 30);
    mt.memlimit_stop = UINT64_MAX;
    lzma_ret ret = lzma_stream_decoder_mt(&stream_, &mt);
    if (ret != LZMA_OK) throw decompression_error(file_.path(), "xz", lzma_error_text(ret));
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
      if (ret != LZMA_OK) throw decompression_error(file_.path(), "xz", lzma_error_text(ret));
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
  ImageInputFile file_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  std::vector<std::uint8_t> in_;
  bool end_of_input_ = false;
  bool finished_ = false;
};

class ZstdImageStream final : public ImageStream {
 public:
  explicit ZstdImageStream(ImageInputFile file)
      : file_(std::move(file)), context_(ZSTD_createDCtx(), &ZSTD_freeDCtx), in_buffer_(ZSTD_DStreamInSize()) {
    if (!context_) throw ImageInputError("cannot decompress ", file_.path(), ": out of memory for the zstd decoder");
    // Images are compressed with long-distance matching (--long) by some distributions; allow their
    // windows up to 2 GiB. Inputs are sha256-pinned, so a huge window is not an attack surface here.
    ZSTD_DCtx_setParameter(context_.get(), ZSTD_d_windowLogMax, 31);
    in_ = ZSTD_inBuffer{in_buffer_.data(), 0, 0};
  }

  std::size_t read(std::span<std::uint8_t> buffer) override {
    ZSTD_outBuffer out{buffer.data(), buffer.size(), 0};
    while (out.pos < out.size && !finished_) {
      if (in_.pos == in_.size && !pending_output_) {
        std::size_t n = file_.read(in_buffer_);
        if (n == 0) {
          if (!any_input_) throw decompression_error(file_.path(), "zstd", "the file is empty");
          if (frame_remainder_ != 0) throw decompression_error(file_.path(), "zstd", "the file is truncated: it ends in the middle of a zstd frame");
          finished_ = true;
          break;
        }
        any_input_ = true;
        in_ = ZSTD_inBuffer{in_buffer_.data(), n, 0};
      }
      std::size_t before = out.pos;
      frame_remainder_ = ZSTD_decompressStream(context_.get(), &out, &in_);
      if (ZSTD_isError(frame_remainder_) != 0) {
        throw decompression_error(file_.path(), "zstd",
                      std::string("the compressed data is corrupt (zstd: ") + ZSTD_getErrorName(frame_remainder_) + ")");
      }
      // A full output buffer may hide more output still inside the decoder (not at a frame's end,
      // where calling again would only wait for the next frame's header): the next call must drain
      // it before reading more input.
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
  ImageInputFile file_;
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
// one .img entry). libarchive reads the file through our descriptor.
class ArchiveImageStream final : public ImageStream {
 public:
  ArchiveImageStream(ImageInputFile file, ImageInputFormat format) : file_(std::move(file)), format_(format) {
    if (format == ImageInputFormat::zip) {
      open_zip_image();
    } else {
      reader_ = open(false);
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(reader_.get(), &entry);
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw failure(reader_.get());
    }
  }

  std::size_t read(std::span<std::uint8_t> buffer) override {
    std::size_t done = 0;
    while (done < buffer.size()) {
      la_ssize_t n = archive_read_data(reader_.get(), buffer.data() + done, buffer.size() - done);
      if (n < 0) throw failure(reader_.get());
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    position_ += done;
    return done;
  }
  std::uint64_t input_position() const override {
    return static_cast<std::uint64_t>(std::max<la_int64_t>(0, archive_filter_bytes(reader_.get(), -1)));
  }
  std::uint64_t input_size() const override { return file_.size(); }
  ImageInputFormat format() const override { return format_; }
  const std::string& name() const override { return file_.name(); }

 private:
  ImageInputError failure(archive* a) const { return decompression_error(file_.path(), to_string(format_), libarchive_error_text(a)); }

  ArchiveReader open(bool zip) {
    ArchiveReader reader(archive_read_new());
    if (zip) {
      // The seekable reader trusts the central directory, as unzip does, and skips entries without
      // decompressing them.
      archive_read_support_format_zip_seekable(reader.get());
    } else {
      archive_read_support_filter_all(reader.get());
      archive_read_support_format_raw(reader.get());
    }
    file_.rewind();
    if (archive_read_open_fd(reader.get(), file_.fd(), input_chunk_size) != ARCHIVE_OK) throw failure(reader.get());
    return reader;
  }

  // Calls `each(index, entry)` for every entry of the zip `a`; stops when it returns false.
  template <typename Each>
  void for_each_zip_entry(archive* a, Each each) const {
    for (std::size_t index = 0;; ++index) {
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(a, &entry);
      if (status == ARCHIVE_EOF) return;
      if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw failure(a);
      if (!each(index, entry)) return;
    }
  }

  // Finds the zip's one .img entry and leaves reader_ at its data.
  void open_zip_image() {
    std::vector<std::pair<std::size_t, std::string>> images;
    std::vector<std::string> entries;
    {
      ArchiveReader listing = open(true);
      for_each_zip_entry(listing.get(), [&](std::size_t index, archive_entry* entry) {
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
      throw ImageInputError("", file_.path(), ": the zip archive holds no .img file (it holds: " +
                                                  (entries.empty() ? std::string("nothing") : list(entries)) + ")");
    }
    if (images.size() > 1) {
      std::vector<std::string> names;
      for (const auto& image : images) names.push_back(image.second);
      throw ImageInputError("", file_.path(), ": the zip archive holds several .img files (" + list(names) +
                                                  "); unpack the one you mean and use it as the base image");
    }
    reader_ = open(true);
    for_each_zip_entry(reader_.get(), [&](std::size_t index, archive_entry*) { return index != images.front().first; });
    log::debug("decompressing ", images.front().second, " from ", file_.name());
  }

  ImageInputFile file_;
  ImageInputFormat format_;
  ArchiveReader reader_;
};

}  // namespace

void ImageStream::skip(std::uint64_t count) {
  std::vector<std::uint8_t> discard(static_cast<std::size_t>(std::min<std::uint64_t>(count, discard_chunk_size)));
  while (count > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(count, discard.size()));
    std::size_t n = read(std::span(discard).first(want));
    if (n == 0) {
      throw ImageInputError("", name(), ": the image ends at " + std::to_string(position()) + " bytes, before offset " +
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

ImageInputFormat detect_image_input_format(const std::filesystem::path& input) { return ImageInputFile(input).format(); }

std::unique_ptr<ImageStream> open_image_stream(const std::filesystem::path& path, const ImageStreamOptions& options) {
  ImageInputFile file(path);
  ImageInputFormat format = file.format();
  unsigned threads = options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  switch (format) {
    case ImageInputFormat::raw: return std::make_unique<RawImageStream>(std::move(file));
    case ImageInputFormat::xz: return std::make_unique<XzImageStream>(std::move(file), threads);
    case ImageInputFormat::zstd: return std::make_unique<ZstdImageStream>(std::move(file));
    case ImageInputFormat::gzip:
    case ImageInputFormat::bzip2:
    case ImageInputFormat::zip: return std::make_unique<ArchiveImageStream>(std::move(file), format);
  }
  throw ImageInputError("", path, ": unknown image format");
}

}  // namespace aggrik8s
