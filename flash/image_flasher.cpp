#include "flash/image_flasher.hpp"

#include "flash/flash_plan.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "disk/aligned_buffer.hpp"
#include "disk/zero_detection.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/positional_io.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"
#include "core/sha256.hpp"

namespace aggrik8s {

namespace {

using Clock = std::chrono::steady_clock;

// io_alignment (disk/aligned_buffer.hpp) is also the unit of zero detection, as in bmaps.
// Verify reads small records separated by gaps up to this size in one request: re-reading a gap is
// cheaper than another round trip to an SD card.
constexpr std::uint64_t verify_gap_to_bridge = 256 << 10;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::uint64_t round_down(std::uint64_t value, std::uint64_t unit) { return value / unit * unit; }

// A queue with a fixed capacity between two threads. close(): no more items, the consumer drains
// what is there; abort(): both sides stop at once (an error on the other side).
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity) {}
  // false when the queue was aborted (the item is dropped).
  bool push(T item) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return aborted_ || items_.size() < capacity_; });
    if (aborted_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  // nullopt when closed and drained, or aborted.
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return aborted_ || closed_ || !items_.empty(); });
    if (aborted_ || items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
  }
  bool aborted() {
    std::lock_guard lock(mutex_);
    return aborted_;
  }
  void abort() {
    std::lock_guard lock(mutex_);
    aborted_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::size_t capacity_;
  std::deque<T> items_;
  bool closed_ = false;
  bool aborted_ = false;
  std::mutex mutex_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
};

// The target, opened twice: once with O_DIRECT for the bulk data (when the target supports it), once
// buffered for what cannot be aligned (an image whose size is not a multiple of 4 KiB, FAT edits).
// Mixing the two on distinct byte ranges is safe: the kernel writes back and invalidates cached pages
// a direct request overlaps.
class FlashTarget {
 public:
  explicit FlashTarget(const std::filesystem::path& path) : path_(path), name_(path.string()) {
    struct stat info {};
    bool exists = ::stat(path.c_str(), &info) == 0;
    if (!exists && errno != ENOENT) throw_system_error("cannot look at " + name_, errno);
    // The same refusals as the plan's (a missing /dev node, a dangling link): the target may have
    // changed since the plan looked.
    if (!exists) classify_flash_target(path, std::nullopt);
    if (exists && !S_ISBLK(info.st_mode) && !S_ISREG(info.st_mode)) {
      throw Error(name_ + " is neither a block device nor a regular file; refusing to write to it");
    }
    block_device_ = exists && S_ISBLK(info.st_mode);
    if (block_device_) {
      // O_EXCL on a block device claims it: the open fails with EBUSY while a filesystem on it (or
      // on one of its partitions) is mounted, or another program holds it exclusively. This backs up
      // the mountinfo check the command does before asking for confirmation.
      buffered_ = FileDescriptor(::open(path.c_str(), O_RDWR | O_EXCL | O_CLOEXEC));
      if (!buffered_) {
        int error = errno;
        if (error == EBUSY) {
          throw Error(name_ + " is busy: a filesystem on it is mounted or another program holds it open exclusively");
        }
        throw Error(describe_target_io_error(name_, "open", 0, error, true));
      }
      std::uint64_t bytes = 0;
      if (::ioctl(buffered_.get(), BLKGETSIZE64, &bytes) != 0) throw_system_error("cannot get the size of " + name_, errno);
      size_ = bytes;
      // Disk images count their partitions in 512-byte sectors (MBR and GPT alike: Raspberry Pi OS,
      // Talos, ours). On a device with 4096-byte logical sectors (a 4Kn NVMe namespace, many USB
      // enclosures) the same table puts every partition 8x further out, and FAT with 512-byte sectors
      // does not mount there: a flash that verifies byte for byte and never boots. Refused up front.
      int sector_size = 512;
      if (::ioctl(buffered_.get(), BLKSSZGET, &sector_size) == 0 && sector_size != 512) {
        throw Error(name_ + " has " + std::to_string(sector_size) +
                    "-byte logical sectors, but disk images count their partitions in 512-byte sectors: on it the "
                    "partitions would not be where the table says (the boot partition " +
                    std::to_string(sector_size / 512) +
                    "x further out) and nothing would boot. Use a device with 512-byte sectors: an NVMe drive "
                    "can be switched with `nvme format --lbaf=N` (the LBA format of data size 512 in "
                    "`nvme id-ns -H`; it erases the drive); a USB enclosure that reports 4096-byte sectors cannot");
      }
    } else {
      // 0600, also for a file that was there: the image may carry a join token or password hashes
      // (the build writes such images 0600), and its copy must not be readable where it was not.
      buffered_ = FileDescriptor(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!buffered_) throw Error(describe_target_io_error(name_, "open", 0, errno, true));
      if (::fchmod(buffered_.get(), 0600) != 0) throw_system_error("cannot make " + name_ + " private (chmod 600)", errno);
      // A copy of the image, like bmaptool's: old contents go, and unwritten ranges read as zeros.
      if (::ftruncate(buffered_.get(), 0) != 0) throw_system_error("cannot truncate " + name_, errno);
    }
    direct_ = FileDescriptor(::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
    if (!direct_ && errno != EINVAL) throw Error(describe_target_io_error(name_, "open", 0, errno, true));
    // EINVAL: the filesystem holding a regular-file target has no direct I/O (tmpfs); buffered it is.
  }

  const std::string& name() const { return name_; }
  bool is_block_device() const { return block_device_; }
  bool has_direct_io() const { return static_cast<bool>(direct_); }
  // Block devices: their size. Regular files: unlimited (they grow).
  std::optional<std::uint64_t> capacity() const {
    return block_device_ ? std::optional<std::uint64_t>(size_) : std::nullopt;
  }
  int buffered_fd() const { return buffered_.get(); }

  void set_file_size(std::uint64_t size) {
    if (block_device_) return;
    if (::ftruncate(buffered_.get(), static_cast<off_t>(size)) != 0) {
      throw Error(describe_target_io_error(name_, "resize", size, errno, true));
    }
    size_ = size;
  }

  void write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    bool aligned = offset % io_alignment == 0 && data.size() % io_alignment == 0 &&
                   reinterpret_cast<std::uintptr_t>(data.data()) % io_alignment == 0;
    int fd = aligned && direct_ ? direct_.get() : buffered_.get();
    const std::size_t done = pwrite_loop(fd, offset, data.data(), data.size(), [&](int err, std::uint64_t at) {
      return Error(describe_target_io_error(name_, "write", at, err, still_present()));
    });
    if (done < data.size()) {
      throw Error("short write to " + name_ + " at offset " + std::to_string(offset + done) + ": " +
                  std::to_string(done) + " of " + std::to_string(data.size()) +
                  " bytes were written (the device is smaller than it claims, or it was removed)");
    }
  }

  // Reads for verification, from the device rather than the page cache: O_DIRECT when aligned,
  // else buffered after drop_cached_pages(). Returns bytes read (short only at a regular file's end).
  std::size_t read(std::uint64_t offset, std::span<std::uint8_t> buffer) {
    bool aligned = offset % io_alignment == 0 && buffer.size() % io_alignment == 0 &&
                   reinterpret_cast<std::uintptr_t>(buffer.data()) % io_alignment == 0;
    int fd = aligned && direct_ ? direct_.get() : buffered_.get();
    return pread_loop(fd, offset, buffer.data(), buffer.size(), [&](int err, std::uint64_t at) {
      return Error(describe_target_io_error(name_, "read back", at, err, still_present()));
    });
  }

  // fdatasync: for a block device this also sends a cache flush to the drive, so "written" means on
  // the flash, not in the card's own RAM. One call covers both descriptors: they open the same inode
  // (the device's, or the file's), and fdatasync writes back that inode's dirty pages whatever
  // descriptor wrote them. (A second call cost one more drive cache flush per batch: on a loop
  // device, a journal commit of the host filesystem.)
  void flush() {
    if (::fdatasync(buffered_.get()) != 0) throw Error(describe_target_io_error(name_, "flush", 0, errno, still_present()));
  }

  // After flush(): every cached page of the target is clean, and POSIX_FADV_DONTNEED drops clean
  // pages (for a block device, those of the device's own page cache). The next buffered read goes to
  // the device.
  void drop_cached_pages() {
    flush();
    ::posix_fadvise(buffered_.get(), 0, 0, POSIX_FADV_DONTNEED);
  }

  bool still_present() const {
    struct stat info {};
    return ::stat(path_.c_str(), &info) == 0;
  }

 private:
  std::filesystem::path path_;
  std::string name_;
  bool block_device_ = false;
  std::uint64_t size_ = 0;
  FileDescriptor buffered_;
  FileDescriptor direct_;
};

// The target as a BlockDevice, with [0, held.size()) served from memory: the first MiB that is not
// on the target yet. Small unaligned I/O (FAT edits) goes through the buffered descriptor.
class StagedTargetDevice final : public BlockDevice {
 public:
  StagedTargetDevice(FlashTarget& target, std::uint64_t size, std::span<std::uint8_t> held, bool writable)
      : target_(target), size_(size), held_(held), writable_(writable) {}

  std::uint64_t size() const override { return size_; }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override {
    check_range("read", offset, buffer.size());
    std::size_t from_memory = held_part(offset, buffer.size());
    if (from_memory > 0) std::memcpy(buffer.data(), held_.data() + offset, from_memory);
    if (from_memory < buffer.size()) {
      auto rest = buffer.subspan(from_memory);
      const std::uint64_t at = offset + from_memory;
      const std::size_t done = pread_loop(target_.buffered_fd(), at, rest.data(), rest.size(), [&](int err, std::uint64_t where) {
        return Error(describe_target_io_error(name(), "read", where, err, target_.still_present()));
      });
      if (done < rest.size()) throw Error(name() + ": unexpected end at offset " + std::to_string(at + done));
    }
  }
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (!writable_) throw Error(name() + ": opened for reading back, cannot write");
    check_range("write", offset, data.size());
    std::size_t to_memory = held_part(offset, data.size());
    if (to_memory > 0) std::memcpy(held_.data() + offset, data.data(), to_memory);
    if (to_memory < data.size()) {
      auto rest = data.subspan(to_memory);
      const std::uint64_t at = offset + to_memory;
      const std::size_t done = pwrite_loop(target_.buffered_fd(), at, rest.data(), rest.size(), [&](int err, std::uint64_t where) {
        return Error(describe_target_io_error(name(), "write", where, err, target_.still_present()));
      });
      if (done < rest.size()) throw Error("short write to " + name() + " at offset " + std::to_string(at + done));
      written_.emplace_back(at, at + rest.size());
    }
  }
  void flush() override { target_.flush(); }
  // [from, to) of each write that reached the target (not the held first MiB).
  const std::vector<std::pair<std::uint64_t, std::uint64_t>>& written() const { return written_; }
  std::string name() const override { return target_.name(); }

 private:
  std::size_t held_part(std::uint64_t offset, std::size_t length) const {
    if (offset >= held_.size()) return 0;
    return static_cast<std::size_t>(std::min<std::uint64_t>(length, held_.size() - offset));
  }
  FlashTarget& target_;
  std::uint64_t size_;
  std::span<std::uint8_t> held_;
  bool writable_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> written_;
};

// One stretch of the target that was written (at most one buffer), with the XXH3-64 digest it must
// read back as. The source's integrity is sha256's job (bmap ranges, --sha256); the read-back guards
// against the device, not an adversary, so a fast non-cryptographic hash is enough. Over 8 MiB
// buffers that are not in the CPU cache, XXH3 hashes 5.0-5.7 GB/s on this VM, liblzma's CRC-64 (used
// before) 3.7 GB/s; both are near memory speed, so the gain is a third of the time, not more. Every
// written byte is hashed twice (write and read-back), and CRC-64 was a quarter of a verified flash's
// CPU (perf), competing with sha256 for two cores.
struct VerifyRecord {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  XXH64_hash_t digest = 0;
};

// A streaming XXH3-64, for records whose read-back arrives in several reads.
class Xxh3Stream {
 public:
  Xxh3Stream() : state_(XXH3_createState()) {
    if (state_ == nullptr) throw Error("out of memory for an XXH3 state");
  }
  ~Xxh3Stream() { XXH3_freeState(state_); }
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void reset() { XXH3_64bits_reset(state_); }
  void update(const std::uint8_t* data, std::size_t length) { XXH3_64bits_update(state_, data, length); }
  XXH64_hash_t digest() const { return XXH3_64bits_digest(state_); }

 private:
  XXH3_state_t* state_;
};

// A stretch of the image the source must provide, with the bmap range it came from.
struct SourceSpan {
  std::uint64_t begin = 0;
  std::optional<std::uint64_t> end;  // nullopt: to the end of the stream
  const BmapRange* range = nullptr;
};

struct Piece {
  std::uint64_t offset = 0;        // on the target
  std::size_t buffer_offset = 0;   // in the buffer
  std::size_t length = 0;
};

// What a writer finished: on the target, not yet flushed.
struct WrittenBuffer {
  std::vector<VerifyRecord> records;
  std::uint64_t bytes = 0;
  std::uint64_t progress_mark = 0;
};

// The first failure among the pipeline's threads is the cause; the others stop because it aborted
// their queues and report nothing.
class FirstFailure {
 public:
  void record(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = std::move(error);
  }
  void rethrow_if_any() {
    std::lock_guard lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
};

struct FilledBuffer {
  std::size_t buffer_index = 0;
  std::vector<Piece> pieces;
  // For the bmap checksum stage: the bytes read, and where they sit in their range.
  std::size_t length = 0;
  const BmapRange* range = nullptr;
  std::uint64_t range_begin = 0;
  std::uint64_t range_end = 0;
  bool range_first = false;
  bool range_last = false;
  std::uint64_t progress_mark = 0;
};

class FlashPipeline {
 public:
  FlashPipeline(ImageStream& source, const Bmap* bmap, FlashTarget& target, const FlashOptions& options)
      : source_(source),
        bmap_(bmap),
        target_(target),
        options_(options),
        buffer_size_(round_up(std::max<std::size_t>(options.buffer_size, io_alignment), io_alignment)),
        write_requests_(std::max(1u, options.write_requests)),
        verify_requests_(std::max(1u, options.verify_requests)),
        verify_batch_bytes_(std::max<std::uint64_t>(options.verify_batch_bytes, 1)),
        flush_ahead_bytes_(std::max<std::uint64_t>(options.flush_ahead_bytes, 1)),
        buffer_count_(std::max(write_requests_ + 2, options.buffer_count)),
        held_(allocate_aligned(flash_first_block_size)),
        free_(buffer_count_),
        filled_(buffer_count_),
        written_(1 << 16),
        verify_queue_(1 << 16) {
    for (unsigned i = 0; i < buffer_count_; ++i) buffers_.push_back(allocate_aligned(buffer_size_, false));
    for (std::size_t i = 0; i < buffers_.size(); ++i) free_.push(i);
    if (bmap_ != nullptr) {
      for (unsigned i = 0; i < std::max(1u, options.check_threads); ++i) {
        checking_.push_back(std::make_unique<BoundedQueue<FilledBuffer>>(buffer_count_));
      }
    }
  }

  FlashResult run() {
    auto started = Clock::now();
    FlashResult result;
    result.used_bmap = bmap_ != nullptr;
    result.target_is_block_device = target_.is_block_device();
    result.direct_io = target_.has_direct_io();

    std::optional<std::uint64_t> image_size = bmap_ != nullptr ? std::optional(bmap_->image_size) : source_.known_size();
    if (bmap_ != nullptr && source_.known_size() && *source_.known_size() != bmap_->image_size) {
      throw Error("the bmap is for an image of " + std::to_string(bmap_->image_size) + " bytes, but " + source_.name() +
                  " has " + std::to_string(*source_.known_size()) + " bytes: they do not belong together");
    }
    if (image_size) check_fits(*image_size, "the image is");

    invalidate_target(image_size);
    std::vector<SourceSpan> spans = plan_spans(image_size);
    std::optional<std::uint64_t> total;
    if (bmap_ != nullptr) {
      total = bmap_->mapped_blocks_count() * bmap_->block_size;
    } else if (source_.format() == ImageInputFormat::raw) {
      total = 0;
      for (const auto& span : spans) *total += *span.end - span.begin;
    } else {
      total = source_.input_size();  // compressed bytes: the image's own size is unknown until the end
    }

    {
      ProgressTask progress("write " + target_.name(), total);
      FirstFailure failure;
      auto abort_all = [&] {
        for (auto& queue : checking_) queue->abort();
        free_.abort();
        filled_.abort();
        written_.abort();
        verify_queue_.abort();
        stop_flushing_ahead();
      };
      auto start_stage = [&](auto body) {
        return std::thread([&failure, &abort_all, body] {
          try {
            body();
          } catch (...) {
            failure.record(std::current_exception());
            abort_all();
          }
        });
      };
      std::vector<std::thread> verifiers;
      if (options_.verify) {
        for (unsigned i = 0; i < verify_requests_; ++i) verifiers.push_back(start_stage([this] { verify_batches(); }));
      }
      // With a bmap the reader feeds the checksum stage, which feeds the writers.
      const bool checked = bmap_ != nullptr;
      std::vector<std::thread> checkers;
      checkers_running_ = static_cast<unsigned>(checking_.size());
      for (auto& queue : checking_) {
        checkers.push_back(start_stage([this, in = queue.get()] { check_ranges(*in); }));
      }
      writers_running_ = write_requests_;
      std::vector<std::thread> writers;
      for (unsigned i = 0; i < write_requests_; ++i) writers.push_back(start_stage([this] { write_buffers(); }));
      std::thread hand_over = start_stage([this, &progress] { hand_over_batches(progress); });
      std::thread flusher;
      if (target_.has_direct_io()) flusher = start_stage([this] { flush_ahead(); });
      auto join = [&] {
        for (auto& checker : checkers) checker.join();
        for (auto& writer : writers) writer.join();
        hand_over.join();
        write_finished_ = Clock::now();
        stop_flushing_ahead();
        if (flusher.joinable()) flusher.join();
        for (auto& verifier : verifiers) verifier.join();
      };
      try {
        read_spans(spans);
        if (checked) {
          for (auto& queue : checking_) queue->close();
        } else {
          filled_.close();
        }
      } catch (...) {
        abort_all();
        join();
        // A reader stopped by a failure further down reports that failure, the cause.
        failure.rethrow_if_any();
        throw;
      }
      join();
      failure.rethrow_if_any();
      progress.finish(true);
    }

    image_size_ = image_size.value_or(source_.position());
    if (!image_size) {
      check_fits(image_size_, "the decompressed image is");
      target_.set_file_size(image_size_);
    }
    target_.flush();
    result.write_seconds = std::chrono::duration<double>(write_finished_ - started).count();
    result.flushes_ahead = flushes_ahead_;
    // What verification added: the read-back of the last batch, after the writers were done.
    result.verify_seconds = seconds_since(write_finished_);

    std::uint64_t held_length = std::min(flash_first_block_size, image_size_);
    if (options_.customize) {
      StagedTargetDevice staged(target_, image_size_, std::span(held_.get(), held_length), true);
      options_.customize(staged);
      target_.flush();
      // What the customisation rewrote (FAT tables, a file's clusters) is no longer what was written:
      // left out of the re-check after the commit (check_customization reads it back instead).
      forget_rewritten(staged.written());
    }

    // Before the commit: what a fake-capacity card wrapped onto the start of the data (keep_ends).
    if (options_.verify) recheck_records(head_records_);
    // The commit: only now does the target get its partition table and boot sector.
    auto commit_started = Clock::now();
    target_.write(0, std::span<const std::uint8_t>(held_.get(), held_length));
    target_.flush();
    bytes_written_ += held_length;
    if (options_.verify) {
      verify_first_block(held_length);
      try {
        recheck_records(tail_records_);  // the end of the data, which wraps onto the first MiB
      } catch (const Error&) {
        // The card does not hold the image: take the commit back, as a failure before it leaves it.
        std::vector<std::uint8_t> zeros(held_length, 0);
        try {
          target_.write(0, std::span<const std::uint8_t>(zeros));
          target_.flush();
        } catch (const Error&) {
        }
        throw;
      }
      result.bytes_verified = bytes_verified_ + held_length;
    }
    if (options_.check_customization) {
      target_.drop_cached_pages();
      StagedTargetDevice written(target_, image_size_, {}, false);
      options_.check_customization(written);
    }
    result.verify_seconds += seconds_since(commit_started);
    result.image_size = image_size_;
    result.bytes_written = bytes_written_;
    result.target_size = target_.capacity().value_or(image_size_);
    result.total_seconds = seconds_since(started);
    return result;
  }

 private:
  void check_fits(std::uint64_t size, const char* what) const {
    auto capacity = target_.capacity();
    if (capacity && size > *capacity) {
      throw Error(std::string(what) + " larger than " + target_.name() + ": " + std::to_string(size) + " bytes (" +
                  format_byte_size(size) + ") do not fit in " + std::to_string(*capacity) + " bytes (" +
                  format_byte_size(*capacity) + ")");
    }
  }

  // A compressed image of unknown size, found too large while it is read: what is known is how far
  // its data reaches, not its full size.
  void check_data_fits(std::uint64_t end) const {
    auto capacity = target_.capacity();
    if (capacity && end > *capacity) {
      throw Error("the image does not fit in " + target_.name() + ": it has data up to byte " + std::to_string(end) + " (" +
                  format_byte_size(end) + ") and " + target_.name() + " holds " + std::to_string(*capacity) + " bytes (" +
                  format_byte_size(*capacity) + "); the image is at least that large");
    }
  }

  // Step 1: from here on, the target does not look like it holds any image.
  void invalidate_target(std::optional<std::uint64_t> image_size) {
    if (!target_.is_block_device()) {
      if (image_size) target_.set_file_size(*image_size);  // a fresh sparse file: reads as zeros
      return;
    }
    std::uint64_t capacity = *target_.capacity();
    std::uint64_t zero_length = std::min<std::uint64_t>(flash_first_block_size, round_down(capacity, io_alignment));
    AlignedBuffer zeros = allocate_aligned(static_cast<std::size_t>(zero_length));
    target_.write(0, std::span<const std::uint8_t>(zeros.get(), zero_length));
    // The GPT backup header sits in the last sector; a stale one makes tools "repair" the new table
    // from it. The image may write over this range again, which is fine: it comes later.
    if (capacity >= 2 * flash_first_block_size) {
      target_.write(round_down(capacity - flash_first_block_size, io_alignment),
                    std::span<const std::uint8_t>(zeros.get(), zero_length));
    }
    target_.flush();
  }

  std::vector<SourceSpan> plan_spans(std::optional<std::uint64_t> image_size) {
    std::vector<SourceSpan> spans;
    if (bmap_ != nullptr) {
      for (const auto& range : bmap_->ranges) {
        std::uint64_t begin = range.first_block * bmap_->block_size;
        std::uint64_t end = std::min(bmap_->image_size, (range.last_block + 1) * bmap_->block_size);
        spans.push_back({begin, end, &range});
      }
      return spans;
    }
    // Without a bmap nothing says which blocks the image's filesystems leave free: on a device every
    // byte is written, zeros and holes too, as dd and bmaptool --nobmap do (a card keeps its old bytes
    // where nothing is written: a FAT's zero entries, a file's zeros). A regular-file target starts
    // empty, so there holes and zero blocks can stay holes.
    if (target_.is_block_device()) {
      spans.push_back({0, image_size, nullptr});
      return spans;
    }
    if (auto extents = source_.data_extents()) {
      // Rounded out to whole blocks so writes stay aligned; the rounding only adds hole bytes (zeros).
      for (const auto& extent : *extents) {
        std::uint64_t begin = round_down(extent.offset, io_alignment);
        std::uint64_t end = std::min(*image_size, round_up(extent.offset + extent.length, io_alignment));
        if (!spans.empty() && begin <= *spans.back().end) {
          spans.back().end = std::max(*spans.back().end, end);
        } else {
          spans.push_back({begin, end, nullptr});
        }
      }
      return spans;
    }
    spans.push_back({0, std::nullopt, nullptr});
    return spans;
  }

  std::size_t take_buffer() {
    auto index = free_.pop();
    if (!index) throw Error("the flash was stopped");  // a writer failed; its error is reported
    return *index;
  }

  // Step 2, reader side: decodes the spans into buffers, decides what to write.
  void read_spans(const std::vector<SourceSpan>& spans) {
    const bool skip_zero_blocks = bmap_ == nullptr && !target_.is_block_device();
    for (const auto& span : spans) {
      if (span.begin < source_.position()) throw Error("bmap ranges are not in order");  // parse_bmap prevents it
      source_.skip(span.begin - source_.position());
      bool first_of_range = true;
      for (;;) {
        std::uint64_t position = source_.position();
        if (span.end && position >= *span.end) break;
        std::size_t want = buffer_size_;
        if (span.end) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, *span.end - position));
        FilledBuffer filled;
        filled.buffer_index = take_buffer();
        std::uint8_t* data = buffers_[filled.buffer_index].get();
        std::size_t got = read_fully(source_, std::span(data, want));
        if (got == 0) {
          free_.push(filled.buffer_index);
          if (span.end) {
            throw Error(source_.name() + ": the image ends at " + std::to_string(position) +
                        " bytes, but the bmap maps data up to " + std::to_string(*span.end));
          }
          break;
        }
        collect_pieces(position, data, got, skip_zero_blocks, filled.pieces);
        filled.length = got;
        if (span.range != nullptr && span.range->sha256) {
          filled.range = span.range;
          filled.range_begin = span.begin;
          filled.range_end = *span.end;
          filled.range_first = first_of_range;
          filled.range_last = position + got >= *span.end;
          first_of_range = false;
        }
        if (source_.format() == ImageInputFormat::raw || bmap_ != nullptr) {
          progress_mark_ += got;
          filled.progress_mark = progress_mark_;
        } else {
          filled.progress_mark = source_.input_position();
        }
        if (bmap_ != nullptr) {
          // A range stays with one checker (its hash is a stream); ranges alternate between them.
          std::size_t checker = span.range != nullptr ? static_cast<std::size_t>(span.range - bmap_->ranges.data()) : 0;
          if (!checking_[checker % checking_.size()]->push(std::move(filled))) throw Error("the flash was stopped");
        } else if (filled.pieces.empty()) {
          free_.push(filled.buffer_index);
        } else if (!filled_.push(std::move(filled))) {
          throw Error("the flash was stopped");
        }
        if (got < want) {
          if (span.end) {
            throw Error(source_.name() + ": the image ends at " + std::to_string(position + got) +
                        " bytes, but the bmap maps data up to " + std::to_string(*span.end));
          }
          break;
        }
      }
    }
  }

  // The bmap checksum stage, between reader and writer: sha256 is the most expensive thing done per
  // byte, so it gets threads of its own (check_threads), each hashing whole ranges: a range's hash
  // is one stream, but ranges are independent. A range's last buffer is checked before it is passed
  // on, so no writer writes the end of a range that does not match.
  void check_ranges(BoundedQueue<FilledBuffer>& in) {
    std::optional<Sha256> hash;
    while (auto filled = in.pop()) {
      if (filled->range_first) hash.emplace();
      if (filled->range != nullptr) {
        hash->update(std::span<const std::uint8_t>(buffers_[filled->buffer_index].get(), filled->length));
      }
      if (filled->range != nullptr && filled->range_last) {
        Sha256Digest calculated = hash->finish();
        hash.reset();
        if (calculated != *filled->range->sha256) {
          throw Error("source checksum mismatch: " + source_.name() + " blocks " +
                      std::to_string(filled->range->first_block) + "-" + std::to_string(filled->range->last_block) +
                      " (bytes " + std::to_string(filled->range_begin) + ".." + std::to_string(filled->range_end) +
                      ") have sha256 " + calculated.hex() + ", the bmap says " + filled->range->sha256->hex() +
                      "; the image is corrupt or the bmap belongs to another image. The target was left without "
                      "a partition table.");
        }
      }
      if (filled->pieces.empty()) {
        if (!free_.push(filled->buffer_index)) return;
      } else if (!filled_.push(std::move(*filled))) {
        return;
      }
    }
    if (in.aborted()) return;
    if (checkers_running_.fetch_sub(1) == 1) filled_.close();
  }

  // Turns [position, position + length) of the image into writes: zero blocks dropped (no bmap), the
  // first MiB diverted to memory, the rest queued for the writers.
  void collect_pieces(std::uint64_t position, const std::uint8_t* data, std::size_t length, bool skip_zero_blocks,
                      std::vector<Piece>& pieces) {
    auto emit = [&](std::size_t from, std::size_t to) {
      std::uint64_t offset = position + from;
      std::uint64_t end = position + to;
      if (offset < flash_first_block_size) {
        std::uint64_t held_end = std::min<std::uint64_t>(end, flash_first_block_size);
        std::memcpy(held_.get() + offset, data + from, static_cast<std::size_t>(held_end - offset));
        from += static_cast<std::size_t>(held_end - offset);
        offset = held_end;
      }
      if (offset >= end) return;
      check_data_fits(end);
      pieces.push_back({offset, from, to - from});
      bytes_written_ += to - from;
    };
    if (!skip_zero_blocks) {
      emit(0, length);
      return;
    }
    std::optional<std::size_t> run_start;
    for (std::size_t at = 0; at < length; at += io_alignment) {
      std::size_t block_length = std::min(io_alignment, length - at);
      if (is_all_zero(std::span<const std::uint8_t>(data + at, block_length))) {
        if (run_start) emit(*run_start, at);
        run_start.reset();
      } else if (!run_start) {
        run_start = at;
      }
    }
    if (run_start) emit(*run_start, length);
  }

  // Step 2, writer side: write_requests_ of these run at once, each writing whole buffers (disjoint
  // ranges of the target), so that several requests are in flight. Each passes what it finished to
  // the hand-over stage, which alone decides when to flush.
  void write_buffers() {
    while (auto filled = filled_.pop()) {
      const std::uint8_t* data = buffers_[filled->buffer_index].get();
      WrittenBuffer written;
      for (const auto& piece : filled->pieces) {
        const std::uint8_t* bytes = data + piece.buffer_offset;
        // The digest the read-back must match, taken here rather than in the reader: the writers
        // are several threads, the reader one.
        if (options_.verify) written.records.push_back({piece.offset, piece.length, XXH3_64bits(bytes, piece.length)});
        target_.write(piece.offset, std::span<const std::uint8_t>(bytes, piece.length));
        written.bytes += piece.length;
      }
      if (options_.test_delay_per_buffer.count() > 0) {
        std::lock_guard one_at_a_time(test_delay_mutex_);
        std::this_thread::sleep_for(options_.test_delay_per_buffer);
      }
      written.progress_mark = filled->progress_mark;
      if (!free_.push(filled->buffer_index)) return;
      if (!written_.push(std::move(written))) return;
    }
    if (filled_.aborted()) return;
    if (writers_running_.fetch_sub(1) == 1) written_.close();
  }

  // Between the writers and the verifiers: every verify_batch_bytes it hands what was written to a
  // verifier (verification then costs the time of the last batch instead of a second pass over the
  // whole image). A batch holds only records whose write had returned. With O_DIRECT a returned
  // write is in the device (no page cache holds it) and the O_DIRECT read-back asks the device, so
  // no flush is needed first: a drive cache flush does not empty the drive's cache, the read after
  // it may come from that cache all the same. The one flush before the commit (run()) makes every
  // batch durable before the first MiB is written. Per-batch flushes cost 0.65 s of a 2.7 s flash of
  // 377 MiB to a loop device (33 fdatasyncs, each a journal commit of the host filesystem). Without
  // O_DIRECT the page cache holds the data: it is written back and dropped before the read-back.
  void hand_over_batches(ProgressTask& progress) {
    std::vector<VerifyRecord> batch;
    std::uint64_t batch_bytes = 0;
    std::uint64_t progress_done = 0;
    auto hand_over = [&] {
      if (!target_.has_direct_io()) target_.drop_cached_pages();
      // Writers finish out of order; the verifier reads best in ascending order.
      std::sort(batch.begin(), batch.end(),
                [](const VerifyRecord& a, const VerifyRecord& b) { return a.offset < b.offset; });
      if (options_.before_read_back) {
        for (const auto& record : batch) options_.before_read_back(record.offset, record.offset + record.length);
      }
      keep_ends(batch);
      if (!batch.empty() && !verify_queue_.push(std::move(batch))) return false;
      batch.clear();
      batch_bytes = 0;
      return true;
    };
    while (auto written = written_.pop()) {
      progress_done = std::max(progress_done, written->progress_mark);
      progress.set_done(progress_done);
      note_unflushed(written->bytes);
      batch_bytes += written->bytes;
      batch.insert(batch.end(), written->records.begin(), written->records.end());
      if (options_.verify && batch_bytes >= verify_batch_bytes_ && !hand_over()) return;
    }
    if (written_.aborted()) return;
    if (options_.verify && !hand_over()) return;
    verify_queue_.close();
  }

  // With O_DIRECT, a drive with a volatile write cache (NVMe, USB SSDs, a virtual disk, a loop device
  // over a file: its filesystem's journal and the disk under that) holds what was written until a
  // flush makes it write it out, and the flush before the commit then waits for all of it at once:
  // 0.2-0.25 s after 377 MiB to this VM's loop device, a quarter of the flash (dd conv=fsync pays the
  // same at its end). This thread asks for a flush every flush_ahead_bytes written while the writers
  // go on, so the device writes out in the background; the final flush then took 0.4-10 ms. It adds
  // flushes, never removes one: the flush before the commit still makes every byte durable before
  // the first MiB is written. (A card behind a USB reader caches little: its flush returns at once.)
  void flush_ahead() {
    std::unique_lock lock(flush_ahead_mutex_);
    for (;;) {
      flush_ahead_wanted_.wait(lock, [&] { return flush_ahead_stopped_ || unflushed_bytes_ >= flush_ahead_bytes_; });
      if (flush_ahead_stopped_) return;
      unflushed_bytes_ = 0;
      lock.unlock();
      target_.flush();
      ++flushes_ahead_;
      lock.lock();
    }
  }
  void note_unflushed(std::uint64_t bytes) {
    std::lock_guard lock(flush_ahead_mutex_);
    unflushed_bytes_ += bytes;
    if (unflushed_bytes_ >= flush_ahead_bytes_) flush_ahead_wanted_.notify_one();
  }
  void stop_flushing_ahead() {
    std::lock_guard lock(flush_ahead_mutex_);
    flush_ahead_stopped_ = true;
    flush_ahead_wanted_.notify_one();
  }

  // Step 3: reads back each batch with O_DIRECT and compares it with the hashes taken while writing.
  // Small records close together are read in one request. verify_requests_ of these run at once,
  // each on its own batch.
  void verify_batches() {
    AlignedBuffer buffer = allocate_aligned(buffer_size_ + 2 * io_alignment, false);
    while (auto batch = verify_queue_.pop()) verify_records(*batch, buffer, false);
  }

  // The records of the lowest and the highest offsets written, about ends_rechecked bytes each, read
  // back once more when everything else is written: the lowest before the commit, the highest after it.
  // A fake-capacity card maps offsets past its real capacity C onto its start again: the write at C
  // lands at 0, after the read-back of what was written there had already passed, and the commit's
  // first MiB lands on whatever wrapped into it. Every batch was verified before the data that wraps
  // onto it arrived, so only these two places tell (f3's test for such cards writes and reads the same).
  // Written by the hand-over thread only, read by run() after it was joined.
  static constexpr std::uint64_t ends_rechecked = 4 << 20;
  std::vector<VerifyRecord> head_records_, tail_records_;
  void keep_ends(const std::vector<VerifyRecord>& batch) {
    auto by_offset = [](const VerifyRecord& a, const VerifyRecord& b) { return a.offset < b.offset; };
    auto total = [](const std::vector<VerifyRecord>& records) {
      std::uint64_t sum = 0;
      for (const auto& r : records) sum += r.length;
      return sum;
    };
    head_records_.insert(head_records_.end(), batch.begin(), batch.end());
    std::sort(head_records_.begin(), head_records_.end(), by_offset);
    while (head_records_.size() > 1 && total(head_records_) - head_records_.back().length >= ends_rechecked) head_records_.pop_back();
    tail_records_.insert(tail_records_.end(), batch.begin(), batch.end());
    std::sort(tail_records_.begin(), tail_records_.end(), by_offset);
    while (tail_records_.size() > 1 && total(tail_records_) - tail_records_.front().length >= ends_rechecked) {
      tail_records_.erase(tail_records_.begin());
    }
  }
  void forget_rewritten(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& rewritten) {
    auto touched = [&](const VerifyRecord& r) {
      return std::any_of(rewritten.begin(), rewritten.end(), [&](const auto& w) {
        return w.first < r.offset + r.length && r.offset < w.second;
      });
    };
    std::erase_if(head_records_, touched);
    std::erase_if(tail_records_, touched);
  }
  void recheck_records(const std::vector<VerifyRecord>& records) {
    AlignedBuffer buffer = allocate_aligned(buffer_size_ + 2 * io_alignment, false);
    target_.drop_cached_pages();
    verify_records(records, buffer, true);
  }

  // `again`: a re-check of records whose batch passed (recheck_records), not counted as verified twice.
  void verify_records(const std::vector<VerifyRecord>& records, AlignedBuffer& buffer, bool again) {
    Xxh3Stream hash;
    for (std::size_t i = 0; i < records.size();) {
      // A window: one record longer than a buffer (read in parts), or several short ones.
      std::size_t end_record = i + 1;
      std::uint64_t window_end = records[i].offset + records[i].length;
      if (records[i].length <= buffer_size_) {
        while (end_record < records.size()) {
          const VerifyRecord& next = records[end_record];
          if (next.offset < window_end || next.offset - window_end > verify_gap_to_bridge ||
              next.offset + next.length - records[i].offset > buffer_size_) {
            break;
          }
          window_end = next.offset + next.length;
          ++end_record;
        }
      }
      for (std::uint64_t from = records[i].offset; from < window_end;) {
        std::uint64_t to = std::min<std::uint64_t>(window_end, from + buffer_size_);
        std::uint64_t aligned_from = round_down(from, io_alignment);
        std::size_t length = static_cast<std::size_t>(round_up(to, io_alignment) - aligned_from);
        std::size_t got = target_.read(aligned_from, std::span(buffer.get(), length));
        if (aligned_from + got < to) {
          throw Error("verify failed: " + target_.name() + " ends at offset " + std::to_string(aligned_from + got) +
                      ", before the data written up to offset " + std::to_string(to));
        }
        for (std::size_t r = i; r < end_record; ++r) {
          const VerifyRecord& record = records[r];
          std::uint64_t slice_from = std::max(record.offset, from);
          std::uint64_t slice_to = std::min(record.offset + record.length, to);
          if (slice_from >= slice_to) continue;
          if (slice_from == record.offset) hash.reset();
          if (!again) bytes_verified_ += slice_to - slice_from;
          hash.update(buffer.get() + (slice_from - aligned_from), static_cast<std::size_t>(slice_to - slice_from));
          if (slice_to == record.offset + record.length && hash.digest() != record.digest) {
            throw verify_mismatch(record, again);
          }
        }
        from = to;
      }
      i = end_record;
    }
  }

  Error verify_mismatch(const VerifyRecord& record, bool again) const {
    std::string where = "offset " + std::to_string(record.offset) + " (" + std::to_string(record.length) + " bytes";
    if (again) {
      return Error("verify failed: " + target_.name() + " no longer holds what was written at " + where +
                   ", read back correctly before): later writes changed it, as on a fake-capacity card whose real "
                   "capacity is smaller than it reports (writes past it wrap around onto its start; check the card "
                   "with f3probe). The target was left without a partition table; do not use it.");
    }
    return Error("verify failed: " + target_.name() + " does not hold what was written at " + where +
                 "). The device returns different data than it was given: a fake-capacity or failing card, or "
                 "a bad reader. The target was left without a partition table.");
  }

  void verify_first_block(std::uint64_t held_length) {
    std::uint64_t length = round_up(held_length, io_alignment);
    AlignedBuffer back = allocate_aligned(static_cast<std::size_t>(length));
    target_.drop_cached_pages();
    std::size_t got = target_.read(0, std::span(back.get(), static_cast<std::size_t>(length)));
    if (got < held_length) {
      throw Error("verify failed: " + target_.name() + " returned " + std::to_string(got) + " of the first " +
                  std::to_string(held_length) + " bytes");
    }
    for (std::uint64_t i = 0; i < held_length; ++i) {
      if (back[i] != held_[i]) {
        throw Error("verify failed: " + target_.name() + " does not hold what was written at offset " +
                    std::to_string(i) + " (in the first MiB: partition table and boot sector)");
      }
    }
  }

  ImageStream& source_;
  const Bmap* bmap_;
  FlashTarget& target_;
  const FlashOptions& options_;
  std::size_t buffer_size_;
  unsigned write_requests_;
  unsigned verify_requests_;
  std::uint64_t verify_batch_bytes_;
  std::uint64_t flush_ahead_bytes_;
  std::mutex flush_ahead_mutex_;
  std::condition_variable flush_ahead_wanted_;
  std::uint64_t unflushed_bytes_ = 0;
  bool flush_ahead_stopped_ = false;
  unsigned flushes_ahead_ = 0;  // only the flush-ahead thread counts, read after it was joined
  unsigned buffer_count_;
  AlignedBuffer held_;
  std::vector<AlignedBuffer> buffers_;
  BoundedQueue<std::size_t> free_;
  std::vector<std::unique_ptr<BoundedQueue<FilledBuffer>>> checking_;  // reader -> checksum stage (with a bmap)
  std::atomic<unsigned> checkers_running_{0};
  BoundedQueue<FilledBuffer> filled_;    // -> writers
  BoundedQueue<WrittenBuffer> written_;  // writers -> hand-over (unbounded in practice: records are small)
  std::atomic<unsigned> writers_running_{0};
  std::mutex test_delay_mutex_;
  BoundedQueue<std::vector<VerifyRecord>> verify_queue_;
  std::uint64_t image_size_ = 0;
  std::uint64_t bytes_written_ = 0;
  std::atomic<std::uint64_t> bytes_verified_{0};
  Clock::time_point write_finished_;
  std::uint64_t progress_mark_ = 0;
};

}  // namespace

std::string describe_target_io_error(const std::string& target, const std::string& operation, std::uint64_t offset,
                                     int error_number, bool target_still_present) {
  std::string at = operation == "open" ? "" : " at offset " + std::to_string(offset);
  switch (error_number) {
    case EACCES:
    case EPERM:
      return "permission denied: cannot " + operation + " " + target + " (" + std::strerror(error_number) +
             "); run as root, or as a member of the group that owns it (usually 'disk')";
    case EROFS:
      return target + " is read-only: cannot " + operation + " it" + at +
             " (is the write-protect switch of the SD card or its adapter set?)";
    case ENOSPC:
      return "no space left: cannot " + operation + " " + target + at;
    case ENOENT:
    case ENODEV:
    case ENXIO:
    case ENOMEDIUM:
    case EIO:
      if (!target_still_present || error_number != EIO) {
        return target + " vanished: cannot " + operation + " it" + at + " (" + std::strerror(error_number) +
               "); was the card or drive removed?";
      }
      return "I/O error: cannot " + operation + " " + target + at +
             "; the card or drive is failing, or it was pulled out and back in";
    default:
      return "cannot " + operation + " " + target + at + ": " + std::strerror(error_number);
  }
}

FlashResult flash_image(ImageStream& source, const Bmap* bmap, const std::filesystem::path& target,
                        const FlashOptions& options) {
  FlashTarget opened(target);
  FlashPipeline pipeline(source, bmap, opened, options);
  FlashResult result = pipeline.run();
  log::debug("flash ", target.string(), ": ", result.bytes_written, " bytes written, direct I/O ",
             result.direct_io ? "yes" : "no");
  return result;
}

}  // namespace aggrik8s
