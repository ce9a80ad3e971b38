#include "disk/image_decompressor.hpp"

#include <fcntl.h>
#include <unistd.h>

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
#include "disk/zero_detection.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/file_descriptor.hpp"
#include "core/progress.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t block_size = 4096;
// Large enough that a pwrite per run of data blocks is cheap, small enough to stay in L2/L3 while
// the zero check walks it right after the decoder wrote it.
constexpr std::size_t staging_size = 4 << 20;

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
      throw output_system_error("cannot set the size of", name_, errno, " to " + std::to_string(base_) + " bytes");
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
      if (!is_all_zero(std::span<const std::uint8_t>(buffer.data.data() + at, length))) {
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
        throw output_system_error("cannot write", name_, errno, " at offset " + std::to_string(buffer.base + done));
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

// Pulls the whole image from `source` straight into the writer's staging buffers (the decoders write
// there, no copy between). A raw sparse source says where its data is: its holes are neither read
// nor checked for zeros.
void copy_image(ImageStream& source, SparseImageWriter& writer, ProgressTask& progress) {
  auto copy_until = [&](std::uint64_t end) {
    while (writer.size() < end) {
      auto space = writer.space();
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(space.size(), end - writer.size()));
      std::size_t n = source.read(space.first(want));
      if (n == 0) return;
      writer.commit(n);
      progress.set_done(source.input_position());
    }
  };
  auto skip_to = [&](std::uint64_t offset) {
    std::uint64_t zeros = offset - writer.size();
    source.skip(zeros);
    writer.skip_zeros(zeros);
  };
  if (auto extents = source.data_extents()) {
    for (const auto& extent : *extents) {
      skip_to(extent.offset);
      copy_until(extent.offset + extent.length);
    }
    skip_to(source.known_size().value_or(writer.size()));
    return;
  }
  copy_until(UINT64_MAX);
}

}  // namespace

DecompressedImage ImageDecompressor::decompress(const std::filesystem::path& input,
                                                const std::filesystem::path& output) const {
  std::unique_ptr<ImageStream> source = open_image_stream(input, options_);
  DecompressedImage result;
  result.format = source->format();
  const std::filesystem::path partial = output.string() + ".partial";
  RemovedOnInterrupt unfinished(partial);
  FileDescriptor out(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) throw output_system_error("cannot create", partial, errno);
  try {
    SparseImageWriter writer(out.get(), partial);
    ProgressTask progress("decompress " + input.filename().string(), source->input_size());
    copy_image(*source, writer, progress);
    writer.finish();
    if (::close(out.release()) != 0) throw output_system_error("cannot write", partial, errno);
    progress.finish();
    result.size = writer.size();
    result.written_bytes = writer.written_bytes();
    std::error_code error;
    std::filesystem::rename(partial, output, error);
    if (error) throw ImageOutputError("cannot rename ", partial, " to " + output.string() + ": " + error.message());
  } catch (...) {
    out.reset();
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw;
  }
  return result;
}

}  // namespace aggrik8s
