#include "disk/bmap.hpp"

#include <expat.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "disk/aligned_buffer.hpp"
#include "disk/copied_ranges.hpp"
#include "disk/image_patch.hpp"
#include "disk/zero_detection.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"
#include "core/progress.hpp"
#include "core/sha256_lane.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t read_chunk_size = 1 << 20;
constexpr std::size_t checksum_hex_length = 64;

// Reads an image's bytes from the image; with a patch, the image's bytes (its copied ranges read
// from the files they are a copy of) with the patch over them.
class ImageReader {
 public:
  ImageReader(int fd, const std::string& name, const ImagePatch* patch = nullptr, const CopiedFiles* copied = nullptr)
      : fd_(fd), name_(name), patch_(patch), copied_(fd, name, copied) {}

  void read(std::uint64_t offset, std::uint8_t* buffer, std::size_t length) const {
    if (patch_ == nullptr) return pread_exactly(fd_, offset, buffer, length, name_);
    copied_.read(offset, std::span<std::uint8_t>(buffer, length));
    patch_->apply(offset, std::span<std::uint8_t>(buffer, length));
  }

 private:
  int fd_;
  const std::string& name_;
  const ImagePatch* patch_;
  CopiedRangeReader copied_;
};

// bmaptool's BmapHelpers.human_size, including its "%.1f" rounding (printf and Python agree).
std::string human_size(std::uint64_t size) {
  if (size == 1) return "1 byte";
  if (size < 512) return std::to_string(size) + " bytes";
  double value = static_cast<double>(size);
  for (const char* unit : {"KiB", "MiB", "GiB", "TiB"}) {
    value /= 1024.0;
    if (value < 1024) {
      char text[64];
      std::snprintf(text, sizeof text, "%.1f %s", value, unit);
      return text;
    }
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.1f EiB", value);
  return text;
}

// Cuts a stream of data blocks into bmap ranges at zero blocks (and wherever the caller says a hole
// interrupts it) and hashes each range. Blocks arrive in ascending order.
class BlockRangeHasher {
 public:
  BlockRangeHasher(std::uint64_t block_size, const BmapOptions& options)
      : block_size_(block_size),
        skip_zero_blocks_(options.skip_zero_blocks),
        split_blocks_(options.range_split_blocks) {}

  // `length` bytes of data at `offset` (a block boundary): whole blocks, except the image's short
  // last block.
  void add(std::uint64_t offset, const std::uint8_t* data, std::size_t length) {
    const auto block_size = static_cast<std::size_t>(block_size_);
    for (std::size_t at = 0; at < length; at += block_size) {
      std::size_t block_length = std::min(block_size, length - at);
      std::uint64_t block = (offset + at) / block_size_;
      if (skip_zero_blocks_ && is_all_zero(std::span<const std::uint8_t>(data + at, block_length))) {
        close_range();
        continue;
      }
      if (!hash_ || block != current_.last_block + 1 || (split_blocks_ != 0 && block % split_blocks_ == 0)) {
        close_range();
        hash_.emplace();
        current_ = BmapRange{block, block, std::nullopt};
      }
      current_.last_block = block;
      hash_->update(std::span<const std::uint8_t>(data + at, block_length));
    }
  }
  void close_range() {
    if (!hash_) return;
    current_.sha256 = hash_->finish();
    ranges_.push_back(current_);
    hash_.reset();
  }
  std::vector<BmapRange> take() {
    close_range();
    return std::move(ranges_);
  }

 private:
  std::uint64_t block_size_;
  bool skip_zero_blocks_;
  std::uint64_t split_blocks_;
  std::optional<Sha256> hash_;
  BmapRange current_;
  std::vector<BmapRange> ranges_;
};

// Hashes block ranges [first, last] of one data region, cutting it into runs at zero blocks.
class RangeScanner {
 public:
  RangeScanner(int fd, const Bmap& layout, const BmapOptions& options, const std::string& name, ProgressTask& progress,
               std::mutex& progress_mutex)
      : fd_(fd),
        layout_(layout),
        options_(options),
        name_(name),
        progress_(progress),
        progress_mutex_(progress_mutex),
        buffer_(allocate_aligned(read_chunk_size, false)) {}

  std::vector<BmapRange> scan(std::uint64_t first_block, std::uint64_t last_block) {
    BlockRangeHasher ranges(layout_.block_size, options_);
    const std::uint64_t block_size = layout_.block_size;
    const std::uint64_t start = first_block * block_size;
    const std::uint64_t end = std::min(layout_.image_size, (last_block + 1) * block_size);
    for (std::uint64_t offset = start; offset < end;) {
      std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(read_chunk_size, end - offset));
      pread_exactly(fd_, offset, buffer_.get(), length, name_);
      ranges.add(offset, buffer_.get(), length);
      offset += length;
      std::lock_guard lock(progress_mutex_);
      progress_.add(length);
    }
    return ranges.take();
  }

 private:
  int fd_;
  const Bmap& layout_;
  const BmapOptions& options_;
  const std::string& name_;
  ProgressTask& progress_;
  std::mutex& progress_mutex_;
  AlignedBuffer buffer_;  // on huge pages, not zeroed: every byte hashed is read into it first
};

// The data of an image in whole blocks: extents rounded out to block boundaries (clipped to the
// image's end) and merged where rounding makes neighbours touch.
struct ByteSpan {
  std::uint64_t begin;
  std::uint64_t end;
};
std::vector<ByteSpan> data_spans(const std::vector<DataExtent>& extents, std::uint64_t image_size, std::uint64_t block_size) {
  std::vector<ByteSpan> spans;
  for (const auto& extent : extents) {
    ByteSpan span{extent.offset / block_size * block_size,
                  std::min(image_size, (extent.offset + extent.length + block_size - 1) / block_size * block_size)};
    if (!spans.empty() && span.begin <= spans.back().end) {
      spans.back().end = std::max(spans.back().end, span.end);
    } else {
      spans.push_back(span);
    }
  }
  return spans;
}

// One chunk of image data in flight between the reader and the whole-image hasher.
struct ImageChunk {
  std::uint64_t offset = 0;
  std::size_t length = 0;
  AlignedBuffer data;  // image_chunk_bytes
};
// The slots' buffers are on huge pages and not zeroed (every byte hashed is read into them first):
// zeroing 8 x 4 MiB in 4 KiB pages was 8,192 first-touch faults per hashed image, two thirds of a
// 1-node Pi build's page faults (10-30 us each on the development VMs; docs/benchmarks.md).
constexpr std::size_t image_chunk_bytes = 4 * read_chunk_size;

// Hashes the whole image in file order from the chunks the reader hands over, feeding zeros for
// the holes between them.
class WholeImageHasher {
 public:
  void add(const ImageChunk& chunk) {
    add_zeros(chunk.offset - position_);
    hash_.update(std::span<const std::uint8_t>(chunk.data.get(), chunk.length));
    position_ = chunk.offset + chunk.length;
  }
  Sha256Digest finish(std::uint64_t image_size) {
    add_zeros(image_size - position_);
    return hash_.finish();
  }

 private:
  void add_zeros(std::uint64_t count) {
    static const std::vector<std::uint8_t> zeros(read_chunk_size);
    while (count > 0) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(count, zeros.size()));
      hash_.update(std::span<const std::uint8_t>(zeros.data(), n));
      count -= n;
    }
  }
  Sha256 hash_;
  std::uint64_t position_ = 0;
};

// --- Reading a bmap file's XML with expat (the parser bmaptool itself reads bmap files with, through
// Python's ElementTree). A .bmap is fetched from wherever the image came from and is not pinned by a
// checksum of its own before it is parsed, so it is untrusted input: a DOCTYPE is refused outright,
// which rules out entity declarations (no "billion laughs" expansion) and external entities (nothing
// is ever loaded from the file system or network). bmaptool never writes a DOCTYPE.

// One element of interest: a child of <bmap> or a <Range> inside <BlockMap>.
struct BmapXmlElement {
  std::string text;              // the element's own character data, entities resolved
  std::size_t text_offset = 0;   // where its first character data starts in the file
  bool has_text = false;
  unsigned long line = 0;        // where the element starts
  std::optional<std::string> checksum;  // <Range chksum="...">
};

struct BmapXmlDocument {
  std::string root_name;
  std::optional<std::string> version;
  std::map<std::string, BmapXmlElement, std::less<>> fields;  // children of <bmap>, the first of each name
  std::vector<BmapXmlElement> ranges;                          // <Range> elements of the first <BlockMap>

  const BmapXmlElement* field(std::string_view name) const {
    auto found = fields.find(name);
    return found == fields.end() ? nullptr : &found->second;
  }
};

class BmapXmlReader {
 public:
  BmapXmlReader(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  BmapXmlDocument read() {
    std::unique_ptr<XML_ParserStruct, decltype(&XML_ParserFree)> parser(XML_ParserCreate(nullptr), &XML_ParserFree);
    if (!parser) throw Error(name_ + ": cannot create an XML parser (out of memory)");
    parser_ = parser.get();
    XML_SetUserData(parser_, this);
    XML_SetParamEntityParsing(parser_, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetStartDoctypeDeclHandler(parser_, &BmapXmlReader::on_doctype);
    XML_SetEntityDeclHandler(parser_, &BmapXmlReader::on_entity_declaration);
    XML_SetElementHandler(parser_, &BmapXmlReader::on_start, &BmapXmlReader::on_end);
    XML_SetCharacterDataHandler(parser_, &BmapXmlReader::on_text);
    // XML_Parse takes an int length; bmap files are small, but a damaged download need not be.
    constexpr std::size_t piece = 1 << 20;
    std::size_t at = 0;
    do {
      std::size_t length = std::min(piece, text_.size() - at);
      bool last = at + length == text_.size();
      if (XML_Parse(parser_, text_.data() + at, static_cast<int>(length), last ? XML_TRUE : XML_FALSE) !=
          XML_STATUS_OK) {
        fail();
      }
      at += length;
    } while (at < text_.size());
    return std::move(document_);
  }

 private:
  [[noreturn]] void fail() {
    std::string what = refusal_.empty() ? XML_ErrorString(XML_GetErrorCode(parser_)) : refusal_;
    throw Error(name_ + ": not a valid bmap file: " + what + " (line " +
                std::to_string(XML_GetCurrentLineNumber(parser_)) + ", column " +
                std::to_string(XML_GetCurrentColumnNumber(parser_) + 1) + ")");
  }
  void refuse(std::string what) {
    if (refusal_.empty()) refusal_ = std::move(what);
    XML_StopParser(parser_, XML_FALSE);
  }

  static void on_doctype(void* self, const XML_Char*, const XML_Char*, const XML_Char*, int) {
    static_cast<BmapXmlReader*>(self)->refuse("a DOCTYPE declaration is not allowed in a bmap file");
  }
  static void on_entity_declaration(void* self, const XML_Char*, int, const XML_Char*, int, const XML_Char*,
                                    const XML_Char*, const XML_Char*, const XML_Char*) {
    static_cast<BmapXmlReader*>(self)->refuse("an entity declaration is not allowed in a bmap file");
  }
  static void on_start(void* data, const XML_Char* name, const XML_Char** attributes) {
    auto& self = *static_cast<BmapXmlReader*>(data);
    auto attribute = [&](std::string_view wanted) -> std::optional<std::string> {
      for (const XML_Char** a = attributes; a[0] != nullptr; a += 2) {
        if (wanted == a[0]) return std::string(a[1]);
      }
      return std::nullopt;
    };
    ++self.depth_;
    self.current_ = nullptr;
    if (self.depth_ == 1) {
      self.document_.root_name = name;
      self.document_.version = attribute("version");
    } else if (self.depth_ == 2) {
      self.in_block_map_ = false;
      auto [field, added] = self.document_.fields.try_emplace(name);
      if (added) {
        self.current_ = &field->second;
        self.in_block_map_ = std::string_view(name) == "BlockMap";
      }
    } else if (self.depth_ == 3 && self.in_block_map_ && std::string_view(name) == "Range") {
      self.document_.ranges.emplace_back();
      self.current_ = &self.document_.ranges.back();
      self.current_->checksum = attribute("chksum");
    }
    if (self.current_ != nullptr) self.current_->line = XML_GetCurrentLineNumber(self.parser_);
    self.current_depth_ = self.current_ != nullptr ? self.depth_ : 0;
  }
  static void on_end(void* data, const XML_Char*) {
    auto& self = *static_cast<BmapXmlReader*>(data);
    if (self.depth_ == 2) self.in_block_map_ = false;
    --self.depth_;
    self.current_ = nullptr;
    self.current_depth_ = 0;
  }
  static void on_text(void* data, const XML_Char* text, int length) {
    auto& self = *static_cast<BmapXmlReader*>(data);
    // Only the element's own text: character data of a nested element is not its parent's.
    if (self.current_ == nullptr || self.current_depth_ != self.depth_) return;
    if (!self.current_->has_text) {
      self.current_->text_offset = static_cast<std::size_t>(XML_GetCurrentByteIndex(self.parser_));
      self.current_->has_text = true;
    }
    self.current_->text.append(text, static_cast<std::size_t>(length));
  }

  std::string_view text_;
  const std::string& name_;
  XML_Parser parser_ = nullptr;
  BmapXmlDocument document_;
  int depth_ = 0;
  bool in_block_map_ = false;
  BmapXmlElement* current_ = nullptr;
  int current_depth_ = 0;
  std::string refusal_;
};

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::strchr(" \t\r\n", text.front()) != nullptr) text.remove_prefix(1);
  while (!text.empty() && std::strchr(" \t\r\n", text.back()) != nullptr) text.remove_suffix(1);
  return text;
}

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

}  // namespace

std::uint64_t Bmap::mapped_blocks_count() const {
  std::uint64_t count = 0;
  for (const auto& range : ranges) count += range.block_count();
  return count;
}

Bmap create_bmap(const std::filesystem::path& image, const BmapOptions& options) {
  const std::string name = image.string();
  FileDescriptor fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_file_error("cannot open image " + name, name, errno);
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) throw_system_error("cannot stat image " + name, errno);
  if (!S_ISREG(info.st_mode)) throw Error(name + ": a bmap can only be made for a regular file");
  Bmap bmap;
  bmap.image_size = static_cast<std::uint64_t>(info.st_size);
  if (bmap.image_size == 0) throw Error("cannot make a bmap of the empty image " + name);

  // Extents in whole blocks; rounding can make neighbours touch, so they are merged.
  struct BlockSpan {
    std::uint64_t first;
    std::uint64_t last;
  };
  std::vector<BlockSpan> spans;
  std::uint64_t data_bytes = 0;
  for (const auto& extent : list_data_extents(fd.get(), bmap.image_size, name)) {
    BlockSpan span{extent.offset / bmap.block_size, (extent.offset + extent.length - 1) / bmap.block_size};
    if (!spans.empty() && span.first <= spans.back().last + 1) {
      spans.back().last = std::max(spans.back().last, span.last);
    } else {
      spans.push_back(span);
    }
  }
  for (const auto& span : spans) {
    data_bytes += std::min(bmap.image_size, (span.last + 1) * bmap.block_size) - span.first * bmap.block_size;
  }

  // Largest spans first, so that no thread is left with one big span at the end while others idle.
  std::vector<std::size_t> order(spans.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return spans[a].last - spans[a].first > spans[b].last - spans[b].first;
  });

  unsigned threads = options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<std::size_t>(threads, std::max<std::size_t>(1, spans.size())));

  ProgressTask progress("bmap " + image.filename().string(), data_bytes);
  std::mutex progress_mutex;
  std::vector<std::vector<BmapRange>> results(spans.size());
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto work = [&] {
    RangeScanner scanner(fd.get(), bmap, options, name, progress, progress_mutex);
    try {
      for (std::size_t i = next++; i < order.size() && !failed; i = next++) {
        results[order[i]] = scanner.scan(spans[order[i]].first, spans[order[i]].last);
      }
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      failed = true;
    }
  };
  std::vector<std::thread> helpers;
  for (unsigned i = 1; i < threads; ++i) helpers.emplace_back(work);
  work();
  for (auto& helper : helpers) helper.join();
  if (first_error) std::rethrow_exception(first_error);
  progress.finish();

  // Spans are separated by at least one hole block, so their ranges never need joining.
  for (auto& ranges : results) bmap.ranges.insert(bmap.ranges.end(), ranges.begin(), ranges.end());
  return bmap;
}

namespace {

// `spans` with the blocks of `extents` added: a patch may write into a hole of the file under it.
std::vector<ByteSpan> add_spans(const std::vector<ByteSpan>& spans, const std::vector<DataExtent>& extents,
                                std::uint64_t image_size, std::uint64_t block_size) {
  std::vector<ByteSpan> all = spans;
  for (const auto& extent : extents) {
    if (extent.offset >= image_size) continue;
    all.push_back(ByteSpan{extent.offset / block_size * block_size,
                           std::min(image_size, (extent.offset + extent.length + block_size - 1) / block_size * block_size)});
  }
  std::sort(all.begin(), all.end(), [](const ByteSpan& a, const ByteSpan& b) { return a.begin < b.begin; });
  std::vector<ByteSpan> merged;
  for (const auto& span : all) {
    if (!merged.empty() && span.begin <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, span.end);
    } else {
      merged.push_back(span);
    }
  }
  return merged;
}

// The image file `image`, opened for hashing: its size and data spans (with a patch's blocks added).
struct OpenedImage {
  std::string name;
  FileDescriptor fd;
  std::uint64_t size = 0;
  std::vector<ByteSpan> spans;
};
OpenedImage open_image_for_hashing(const std::filesystem::path& image, std::uint64_t block_size, const ImagePatch* patch,
                                   const CopiedFiles* copied = nullptr) {
  OpenedImage opened;
  opened.name = image.string();
  opened.fd = FileDescriptor(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!opened.fd) throw_file_error("cannot open image " + opened.name, opened.name, errno);
  struct stat info {};
  if (::fstat(opened.fd.get(), &info) != 0) throw_system_error("cannot stat image " + opened.name, errno);
  if (!S_ISREG(info.st_mode)) throw Error(opened.name + ": only a regular file can be hashed as an image");
  opened.size = static_cast<std::uint64_t>(info.st_size);
  ::posix_fadvise(opened.fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  opened.spans = data_spans(copied != nullptr && copied->image_extents ? *copied->image_extents
                                                                        : list_data_extents(opened.fd.get(), opened.size, opened.name),
                            opened.size, block_size);
  if (patch != nullptr) opened.spans = add_spans(opened.spans, patch->extents(), opened.size, block_size);
  // Copied ranges are data even where the image file does not have them yet (the write is in flight).
  if (copied != nullptr) opened.spans = add_spans(opened.spans, copied->extents(), opened.size, block_size);
  return opened;
}

// `patched`: the extents a patch writes over the image (sorted), whose chunks `known` must not answer.
ImageHashes hash_opened_image(const OpenedImage& image, const ImageReader& reader, bool with_bmap, const BmapOptions& options,
                              const std::string& label, bool with_sha256 = true, KnownChunkRanges* known = nullptr,
                              const std::vector<DataExtent>& patched = {});

}  // namespace

ImageHashes hash_image(const std::filesystem::path& image, bool with_bmap, const BmapOptions& options) {
  const OpenedImage opened = open_image_for_hashing(image, Bmap{}.block_size, nullptr);
  const ImageReader reader(opened.fd.get(), opened.name);
  return hash_opened_image(opened, reader, with_bmap, options, image.filename().string());
}

ImageHashes hash_patched_image(const std::filesystem::path& base, const ImagePatch& patch, const std::string& image_name,
                               bool with_bmap, const BmapOptions& options, const CopiedFiles* copied, KnownChunkRanges* known) {
  const OpenedImage opened = open_image_for_hashing(base, Bmap{}.block_size, &patch, copied);
  const ImageReader reader(opened.fd.get(), opened.name, &patch, copied);
  return hash_opened_image(opened, reader, with_bmap, options, image_name, true, known, patch.extents());
}

Bmap create_bmap(const std::filesystem::path& image, const BmapOptions& options, const CopiedFiles& copied,
                 KnownChunkRanges* known) {
  const ImagePatch nothing;
  const OpenedImage opened = open_image_for_hashing(image, Bmap{}.block_size, &nothing, &copied);
  const ImageReader reader(opened.fd.get(), opened.name, &nothing, &copied);
  return *hash_opened_image(opened, reader, true, options, image.filename().string(), false, known).bmap;
}

namespace {

// The image's data cut into the chunks the hashing reads: each ends at a multiple of
// image_chunk_bytes or at its span's end, so a bmap range whose split size divides image_chunk_bytes
// never continues from one chunk into the next and the chunks' ranges can be hashed in any order.
struct PlannedChunk {
  std::uint64_t offset;
  std::size_t length;
  bool ends_span;
};
// Whether any of `extents` (sorted, disjoint) overlaps the chunk.
bool touches(const std::vector<DataExtent>& extents, const PlannedChunk& chunk) {
  auto extent = std::lower_bound(extents.begin(), extents.end(), chunk.offset,
                                 [](const DataExtent& e, std::uint64_t at) { return e.offset + e.length <= at; });
  return extent != extents.end() && extent->offset < chunk.offset + chunk.length;
}

std::vector<PlannedChunk> plan_chunks(const std::vector<ByteSpan>& spans) {
  std::vector<PlannedChunk> chunks;
  for (const auto& span : spans) {
    for (std::uint64_t offset = span.begin; offset < span.end;) {
      const std::uint64_t end = std::min<std::uint64_t>(span.end, (offset / image_chunk_bytes + 1) * image_chunk_bytes);
      chunks.push_back({offset, static_cast<std::size_t>(end - offset), end == span.end});
      offset = end;
    }
  }
  return chunks;
}

ImageHashes hash_opened_image(const OpenedImage& image, const ImageReader& reader, bool with_bmap, const BmapOptions& options,
                              const std::string& label, bool with_sha256, KnownChunkRanges* known,
                              const std::vector<DataExtent>& patched) {
  const std::string& name = image.name;
  ImageHashes result;
  result.size = image.size;
  if (with_bmap && result.size == 0) throw Error("cannot make a bmap of the empty image " + name);
  Bmap layout;
  layout.image_size = result.size;
  const std::vector<PlannedChunk> chunks = plan_chunks(image.spans);
  std::uint64_t data_bytes = 0;
  for (const auto& chunk : chunks) data_bytes += chunk.length;
  ProgressTask progress(std::string(with_bmap ? (with_sha256 ? "bmap + sha256 " : "bmap ") : "sha256 ") + label, data_bytes);
  WholeImageHasher whole;

  const bool two_threads =
      with_sha256 && (options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency())) > 1;
  std::vector<ImageChunk> slots(two_threads ? 8 : 1);
  for (auto& slot : slots) slot.data = allocate_aligned(image_chunk_bytes, false);

  // A chunk's bmap ranges are its "range job". When the split size divides the chunk size the jobs
  // are independent (see plan_chunks): each chunk gets a hasher of its own, and `known` may answer
  // for it; otherwise one hasher sees the chunks in order.
  const std::uint64_t split_bytes = options.range_split_blocks * layout.block_size;
  const bool independent_jobs = split_bytes != 0 && image_chunk_bytes % split_bytes == 0;
  BlockRangeHasher in_order(layout.block_size, options);
  std::vector<std::vector<BmapRange>> chunk_ranges(independent_jobs ? chunks.size() : 0);
  if (known != nullptr && (!independent_jobs || !options.skip_zero_blocks || known->block_size() != layout.block_size ||
                           known->range_split_blocks() != options.range_split_blocks)) {
    known = nullptr;
  }
  auto hash_ranges = [&](std::size_t index) {
    if (!with_bmap) return;
    const PlannedChunk& chunk = chunks[index];
    const std::uint8_t* data = slots[index % slots.size()].data.get();
    if (independent_jobs) {
      const bool ask = known != nullptr && !touches(patched, chunk);
      if (ask) {
        if (auto ranges = known->find(chunk.offset, std::span(data, chunk.length))) {
          chunk_ranges[index] = std::move(*ranges);
          return;
        }
      }
      BlockRangeHasher ranges(layout.block_size, options);
      ranges.add(chunk.offset, data, chunk.length);
      chunk_ranges[index] = ranges.take();
      if (ask) known->hashed(chunk.offset, chunk.length, chunk_ranges[index]);
    } else {
      in_order.add(chunk.offset, data, chunk.length);
      if (chunk.ends_span) in_order.close_range();
    }
  };
  auto read_chunk = [&](std::size_t index) {
    ImageChunk& slot = slots[index % slots.size()];
    slot.offset = chunks[index].offset;
    slot.length = chunks[index].length;
    reader.read(slot.offset, slot.data.get(), slot.length);
  };

  // The reader fills slot i % slots.size() with chunk i once the whole-image hasher is done with
  // chunk i - slots.size(); it never waits for itself, because it finishes a chunk's range job
  // before it reads the next one. (Letting the hasher take range jobs while it waited for a chunk
  // was tried: no faster, docs/benchmarks.md.)
  std::mutex mutex;
  std::condition_variable changed;
  std::size_t produced = 0;  // chunks ready for the whole-image hasher
  std::size_t consumed = 0;  // chunks it is done with
  bool finished = false;     // no more chunks (the reader is done or failed)
  std::thread hasher;
  if (two_threads) {
    hasher = std::thread([&] {
      for (std::size_t next = 0;; ++next) {
        {
          std::unique_lock lock(mutex);
          changed.wait(lock, [&] { return produced > next || finished; });
          if (produced <= next) return;
        }
        whole.add(slots[next % slots.size()]);
        {
          std::lock_guard lock(mutex);
          consumed = next + 1;
        }
        changed.notify_all();
      }
    });
  }
  auto stop_hasher = [&] {
    {
      std::lock_guard lock(mutex);
      finished = true;
    }
    changed.notify_all();
    if (hasher.joinable()) hasher.join();
  };
  // A bmap alone needs no bytes that `known` does not look at: such chunks are not read at all (a
  // multi-node build's bmap of its prepared image, whose chunks are almost all copies of files whose
  // ranges are kept; 0.2 s of reading on the cores that hash the node images).
  auto known_without_reading = [&](std::size_t index) {
    const PlannedChunk& chunk = chunks[index];
    if (with_sha256 || !with_bmap || !independent_jobs || known == nullptr || touches(patched, chunk) ||
        known->needs_bytes(chunk.offset, chunk.length)) {
      return false;
    }
    // find() takes the chunk's length from the span and does not read it.
    auto ranges = known->find(chunk.offset, std::span<const std::uint8_t>(slots[0].data.get(), chunk.length));
    if (!ranges) return false;
    chunk_ranges[index] = std::move(*ranges);
    return true;
  };
  try {
    for (std::size_t index = 0; index < chunks.size(); ++index) {
      if (known_without_reading(index)) {
        progress.add(chunks[index].length);
        continue;
      }
      if (two_threads) {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return index < consumed + slots.size(); });
      }
      read_chunk(index);
      if (two_threads) {
        {
          std::lock_guard lock(mutex);
          produced = index + 1;
        }
        changed.notify_all();
      } else if (with_sha256) {
        whole.add(slots[0]);
      }
      hash_ranges(index);
      progress.add(chunks[index].length);
    }
  } catch (...) {
    stop_hasher();
    throw;
  }
  stop_hasher();
  if (with_sha256) result.sha256 = whole.finish(result.size);
  progress.finish();
  if (with_bmap) {
    if (independent_jobs) {
      for (auto& ranges : chunk_ranges) layout.ranges.insert(layout.ranges.end(), ranges.begin(), ranges.end());
    } else {
      layout.ranges = in_order.take();
    }
    result.bmap = std::move(layout);
  }
  return result;
}

}  // namespace

namespace {

// Base's bytes of the planned chunks, read once for all the chains that take them: a chunk is read
// by the first chain to get there and kept until the last has passed it. Rotating pairs keep the
// chains a few chunks apart, so few are kept. At most `capacity` are: when full, a chunk no chain is
// in is dropped (many images: chains that wait their turn may be far behind), and where none can
// be, or the chain is the last to need a chunk nobody kept, the chain reads the chunk itself.
// Reading every chunk once per chain cost a 3-node Pi build 0.4 s of CPU (copies out of the page
// cache) on its two cores.
class SharedChunks {
 public:
  SharedChunks(const ImageReader& reader, const std::vector<PlannedChunk>& chunks, std::size_t users, std::size_t capacity)
      : reader_(reader), chunks_(chunks), capacity_(capacity), users_left_(chunks.size(), users) {}

  // Chunk `index`'s bytes, held until the chain releases the chunk; null when the chain is to read
  // the chunk itself.
  const std::uint8_t* acquire(std::size_t index) {
    std::unique_lock lock(mutex_);
    auto found = kept_.find(index);
    if (found == kept_.end()) {
      if (users_left_[index] <= 1 || (kept_.size() >= capacity_ && !drop_one())) return nullptr;
      Kept& kept = kept_[index];
      kept.holders = 1;
      if (!spare_.empty()) {
        kept.buffer = std::move(spare_.back());
        spare_.pop_back();
      }
      lock.unlock();
      bool read = false;
      try {
        if (!kept.buffer) kept.buffer = allocate_aligned(image_chunk_bytes, false);
        reader_.read(chunks_[index].offset, kept.buffer.get(), chunks_[index].length);
        read = true;
      } catch (...) {
        // The chains read it themselves (and meet the error there, naming the file).
      }
      lock.lock();
      if (read) ++reads_;
      most_kept_ = std::max(most_kept_, kept_.size());
      kept.state = read ? State::ready : State::failed;
      changed_.notify_all();
      if (read) return kept.buffer.get();
      --kept.holders;
      return nullptr;
    }
    // Held while it waits, so that the chunk is not dropped between its reading and this chain.
    Kept& kept = found->second;
    ++kept.holders;
    changed_.wait(lock, [&] { return kept.state != State::reading; });
    if (kept.state == State::ready) return kept.buffer.get();
    --kept.holders;
    return nullptr;
  }
  // A chain has passed chunk `index`; `held`: it had the kept bytes (acquire gave it them).
  void release(std::size_t index, bool held) {
    std::lock_guard lock(mutex_);
    auto found = kept_.find(index);
    if (held && found != kept_.end()) --found->second.holders;
    if (--users_left_[index] != 0 || found == kept_.end()) return;
    drop(found);
  }
  std::size_t reads() const { return reads_; }
  std::size_t most_kept() const { return most_kept_; }

 private:
  enum class State { reading, ready, failed };
  struct Kept {
    State state = State::reading;
    std::size_t holders = 0;
    AlignedBuffer buffer;
  };
  void drop(std::map<std::size_t, Kept>::iterator kept) {
    if (kept->second.buffer) spare_.push_back(std::move(kept->second.buffer));
    kept_.erase(kept);
  }
  // Drops the first kept chunk no chain is in (the farthest back); false if every one is in use.
  bool drop_one() {
    for (auto kept = kept_.begin(); kept != kept_.end(); ++kept) {
      if (kept->second.state != State::reading && kept->second.holders == 0) {
        drop(kept);
        return true;
      }
    }
    return false;
  }

  const ImageReader& reader_;
  const std::vector<PlannedChunk>& chunks_;
  const std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::size_t> users_left_;  // per chunk, the chains that have not passed it
  std::map<std::size_t, Kept> kept_;
  std::vector<AlignedBuffer> spare_;
  std::size_t reads_ = 0;
  std::size_t most_kept_ = 0;
};

// One image's sha256 on its way, in hash_patched_images: how far its chain has got, the first
// planned chunk that ends past there, and that chunk's bytes (kept for all, or its own buffer's:
// where its patch writes into the chunk, or where none was kept).
struct ImageChain {
  const ImagePatch* patch = nullptr;
  std::vector<DataExtent> patched;
  std::uint64_t position = 0;
  std::size_t chunk = 0;
  const std::uint8_t* chunk_bytes = nullptr;
  bool holds_kept = false;  // it holds its chunk in SharedChunks (acquire gave it the bytes)
  AlignedBuffer buffer;
  Sha256Lane lane;
};

// The images' bytes as their chains take them: every image is base's bytes (through `reader`) with
// its patch over them, and zeros outside `chunks` (the holes every image has).
class ImageChainSource {
 public:
  ImageChainSource(const OpenedImage& image, const ImageReader& reader, const std::vector<PlannedChunk>& chunks,
                   SharedChunks& shared)
      : image_(image), reader_(reader), chunks_(chunks), shared_(shared) {}

  bool done(const ImageChain& chain) const { return chain.position >= image_.size; }

  // How many bytes, at most `limit`, chain can take in one piece: up to the end of the hole or chunk
  // it is in (a hole's zeros at most read_chunk_size at a time).
  std::size_t piece(const ImageChain& chain, std::uint64_t limit) const {
    const bool hole = in_hole(chain);
    std::uint64_t end = image_.size;
    if (chain.chunk < chunks_.size()) {
      const PlannedChunk& next = chunks_[chain.chunk];
      end = hole ? next.offset : next.offset + next.length;
    }
    if (hole) limit = std::min<std::uint64_t>(limit, read_chunk_size);
    return static_cast<std::size_t>(std::min(limit, end - chain.position));
  }
  // The next `length` bytes of chain's image (length from piece()); counts the bytes of data.
  std::span<const std::uint8_t> bytes(ImageChain& chain, std::size_t length, std::uint64_t& data) const {
    static const std::vector<std::uint8_t> zeros(read_chunk_size);
    if (in_hole(chain)) return std::span(zeros.data(), length);
    const PlannedChunk& chunk = chunks_[chain.chunk];
    if (chain.chunk_bytes == nullptr) enter(chain, chunk);
    data += length;
    return std::span(chain.chunk_bytes + (chain.position - chunk.offset), length);
  }
  void advance(ImageChain& chain, std::size_t length) const {
    chain.position += length;
    if (chain.chunk < chunks_.size() && chain.position >= chunks_[chain.chunk].offset + chunks_[chain.chunk].length) {
      shared_.release(chain.chunk, chain.holds_kept);
      chain.chunk_bytes = nullptr;
      chain.holds_kept = false;
      ++chain.chunk;
    }
  }

 private:
  bool in_hole(const ImageChain& chain) const {
    return chain.chunk >= chunks_.size() || chain.position < chunks_[chain.chunk].offset;
  }
  // The chain's bytes of the chunk it has come to.
  void enter(ImageChain& chain, const PlannedChunk& chunk) const {
    const std::uint8_t* kept = shared_.acquire(chain.chunk);
    chain.holds_kept = kept != nullptr;
    if (kept != nullptr && !touches(chain.patched, chunk)) {
      chain.chunk_bytes = kept;
      return;
    }
    const std::span<std::uint8_t> own(chain.buffer.get(), chunk.length);
    if (kept != nullptr) {
      std::memcpy(own.data(), kept, chunk.length);
    } else {
      reader_.read(chunk.offset, own.data(), chunk.length);
    }
    chain.patch->apply(chunk.offset, own);
    chain.chunk_bytes = own.data();
  }

  const OpenedImage& image_;
  const ImageReader& reader_;
  const std::vector<PlannedChunk>& chunks_;
  SharedChunks& shared_;
};

}  // namespace

std::vector<ImageHashes> hash_patched_images(const std::filesystem::path& base, const std::vector<const ImagePatch*>& patches,
                                             const std::string& label, const CopiedFiles* copied, std::size_t threads,
                                             std::uint64_t round_bytes, std::size_t kept_chunks) {
  const ImagePatch nothing;
  const std::uint64_t block_size = Bmap{}.block_size;
  OpenedImage opened = open_image_for_hashing(base, block_size, &nothing, copied);
  std::vector<ImageChain> chains(patches.size());
  for (std::size_t i = 0; i < chains.size(); ++i) {
    chains[i].patch = patches[i];
    chains[i].patched = patches[i]->extents();
    chains[i].buffer = allocate_aligned(image_chunk_bytes, false);
    opened.spans = add_spans(opened.spans, chains[i].patched, opened.size, block_size);
  }
  const ImageReader reader(opened.fd.get(), opened.name, &nothing, copied);
  const std::vector<PlannedChunk> chunks = plan_chunks(opened.spans);
  SharedChunks shared(reader, chunks, patches.size(), kept_chunks);
  const ImageChainSource source(opened, reader, chunks, shared);
  std::uint64_t data_bytes = 0;
  for (const auto& chunk : chunks) data_bytes += chunk.length;
  ProgressTask progress("sha256 " + label, data_bytes * patches.size());
  std::mutex progress_mutex;
  auto report = [&](std::uint64_t read) {
    std::lock_guard lock(progress_mutex);
    progress.add(read);
  };

  threads = std::max<std::size_t>(1, threads);
  const bool pairing = Sha256Lane::accelerated();
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto guarded = [&](const std::function<void()>& work) {
    try {
      work();
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      failed = true;
    }
  };
  // `until` says when to stop early (checked between pieces of at most `step` bytes: the pairs wait
  // for the last piece of the chains alone at the end of each round).
  auto run_alone = [&](ImageChain& chain, std::uint64_t budget, const std::function<bool()>& until, std::uint64_t step) {
    std::uint64_t read = 0;
    while (budget > 0 && !source.done(chain) && !failed && !until()) {
      const std::size_t n = source.piece(chain, std::min(budget, step));
      chain.lane.update(source.bytes(chain, n, read));
      source.advance(chain, n);
      budget -= n;
    }
    report(read);
  };
  auto run_pair = [&](ImageChain& first, ImageChain& second, std::uint64_t budget) {
    std::uint64_t read = 0;
    while (budget > 0 && !source.done(first) && !source.done(second) && !failed) {
      const std::size_t n = source.piece(second, source.piece(first, budget));
      const auto first_bytes = source.bytes(first, n, read);
      Sha256Lane::update_pair(first.lane, first_bytes, second.lane, source.bytes(second, n, read));
      source.advance(first, n);
      source.advance(second, n);
      budget -= n;
    }
    report(read);
  };

  // More chains than threads: in rounds, each thread takes a pair of chains (which costs 1.3x one
  // chain's time, core/sha256_lane.hpp) or one alone, so that as many run as can at the pairs' rate.
  // A pair takes round_bytes of each (64 MiB: 28 rounds for a 1.8 GiB image, each ending with at
  // most a MiB's wait, 0.6 ms); the chains alone go on until the pairs are done. The chains
  // least far on go alone (faster) or pair first, so they catch up and change partners from round to
  // round: 3 images on 2 cores, a pair beside one alone all the way, took 2.1 s where the one alone
  // was done at 1.6 s; rotating, all three end together. Once no more chains are left than threads,
  // each goes on alone to its end.
  round_bytes = std::max<std::uint64_t>(round_bytes, 64);
  const auto unlimited = std::numeric_limits<std::uint64_t>::max();
  for (;;) {
    std::vector<ImageChain*> left;
    for (auto& chain : chains) {
      if (!source.done(chain)) left.push_back(&chain);
    }
    if (left.empty() || failed) break;
    std::stable_sort(left.begin(), left.end(), [](const ImageChain* a, const ImageChain* b) { return a->position < b->position; });
    const bool last_round = left.size() <= threads;
    const std::size_t pairs = last_round || !pairing ? 0 : std::min(threads, left.size() - threads);
    const std::size_t alone = std::min(left.size(), threads) - pairs;
    std::atomic<std::size_t> pairs_running{pairs};
    auto pairs_done = [&] { return pairs_running == 0; };
    std::vector<std::function<void()>> groups;
    for (std::size_t i = 0; i < alone; ++i) {
      groups.emplace_back([&, chain = left[i]] {
        if (last_round) return run_alone(*chain, unlimited, [] { return false; }, unlimited);
        if (pairs == 0) return run_alone(*chain, round_bytes, [] { return false; }, unlimited);
        run_alone(*chain, unlimited, pairs_done, read_chunk_size);
      });
    }
    for (std::size_t i = 0; i < pairs; ++i) {
      groups.emplace_back([&, first = left[alone + 2 * i], second = left[alone + 2 * i + 1]] {
        run_pair(*first, *second, round_bytes);
        --pairs_running;
      });
    }
    std::vector<std::thread> helpers;
    for (std::size_t i = 1; i < groups.size(); ++i) {
      helpers.emplace_back([&, i] { guarded(groups[i]); });
    }
    // A failure stops every group at its next piece (the chains alone do not wait for a failed pair).
    guarded(groups[0]);
    for (auto& helper : helpers) helper.join();
  }
  if (first_error) std::rethrow_exception(first_error);
  progress.finish();
  log::debug("sha256 ", label, ": ", chunks.size(), " chunks, ", shared.reads(), " read once for all (at most ",
             shared.most_kept(), " kept at a time)");
  std::vector<ImageHashes> hashes(chains.size());
  for (std::size_t i = 0; i < chains.size(); ++i) {
    hashes[i].size = opened.size;
    hashes[i].sha256 = chains[i].lane.finish();
  }
  return hashes;
}

namespace {

Bmap update_opened_bmap(const OpenedImage& image, const ImageReader& reader, const Bmap& base,
                        const std::vector<DataExtent>& changed, const BmapOptions& options);

}  // namespace

Bmap update_bmap(const std::filesystem::path& image, const Bmap& base, const std::vector<DataExtent>& changed,
                 const BmapOptions& options) {
  const OpenedImage opened = open_image_for_hashing(image, base.block_size, nullptr);
  const ImageReader reader(opened.fd.get(), opened.name);
  return update_opened_bmap(opened, reader, base, changed, options);
}

Bmap update_patched_bmap(const std::filesystem::path& base_image, const Bmap& base, const ImagePatch& patch,
                         const BmapOptions& options, const CopiedFiles* copied) {
  const OpenedImage opened = open_image_for_hashing(base_image, base.block_size, &patch, copied);
  const ImageReader reader(opened.fd.get(), opened.name, &patch, copied);
  return update_opened_bmap(opened, reader, base, patch.extents(), options);
}

namespace {

Bmap update_opened_bmap(const OpenedImage& image, const ImageReader& reader, const Bmap& base,
                        const std::vector<DataExtent>& changed, const BmapOptions& options) {
  const std::string& name = image.name;
  if (options.range_split_blocks == 0 || !options.skip_zero_blocks) {
    throw Error(name + ": a bmap can only be updated when its ranges are split into chunks and zero blocks are skipped");
  }
  const std::uint64_t size = image.size;
  if (size != base.image_size) {
    throw Error(name + ": is " + std::to_string(size) + " bytes, but the bmap it is derived from describes " +
                std::to_string(base.image_size));
  }
  const std::uint64_t block_size = base.block_size;
  const std::uint64_t split = options.range_split_blocks;
  const std::uint64_t chunk_bytes = split * block_size;

  std::vector<std::uint64_t> dirty;  // chunk numbers, sorted
  for (const auto& extent : merge_extents(changed)) {
    if (extent.offset >= size) continue;
    std::uint64_t end = std::min(size, extent.offset + extent.length);
    for (std::uint64_t chunk = extent.offset / chunk_bytes; chunk <= (end - 1) / chunk_bytes; ++chunk) {
      if (dirty.empty() || dirty.back() != chunk) dirty.push_back(chunk);
    }
  }
  auto is_dirty = [&](std::uint64_t chunk) { return std::binary_search(dirty.begin(), dirty.end(), chunk); };

  Bmap result;
  result.image_size = size;
  result.block_size = base.block_size;
  for (const auto& range : base.ranges) {
    if (range.first_block / split != range.last_block / split) {
      throw Error(name + ": the bmap it is derived from has a range (blocks " + std::to_string(range.first_block) + "-" +
                  std::to_string(range.last_block) + ") that crosses a chunk of " + std::to_string(split) + " blocks");
    }
    if (!is_dirty(range.first_block / split)) result.ranges.push_back(range);
  }

  // The touched chunks, read again where the image has data (an edit may have filled a hole).
  const std::vector<ByteSpan>& spans = image.spans;
  BlockRangeHasher hasher(block_size, options);
  const auto buffer_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_bytes, image_chunk_bytes));
  const AlignedBuffer buffer = allocate_aligned(buffer_bytes, false);  // read into before it is hashed
  for (std::uint64_t chunk : dirty) {
    const std::uint64_t begin = chunk * chunk_bytes;
    const std::uint64_t end = std::min(size, begin + chunk_bytes);
    auto span = std::lower_bound(spans.begin(), spans.end(), begin, [](const ByteSpan& s, std::uint64_t at) { return s.end <= at; });
    for (; span != spans.end() && span->begin < end; ++span) {
      for (std::uint64_t offset = std::max(span->begin, begin); offset < std::min(span->end, end);) {
        auto length = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_bytes, std::min(span->end, end) - offset));
        reader.read(offset, buffer.get(), length);
        hasher.add(offset, buffer.get(), length);
        offset += length;
      }
      hasher.close_range();
    }
  }
  std::vector<BmapRange> rescanned = hasher.take();
  result.ranges.insert(result.ranges.end(), rescanned.begin(), rescanned.end());
  std::sort(result.ranges.begin(), result.ranges.end(),
            [](const BmapRange& a, const BmapRange& b) { return a.first_block < b.first_block; });
  return result;
}

}  // namespace

std::string format_bmap(const Bmap& bmap) {
  // Built the way bmaptool's BmapCreate builds it: the text is first written with blanks where the
  // mapped counts go and zeros where the checksum goes, then those are overwritten in place. That is
  // why the count comments carry the trailing blanks they do; copying the mechanism keeps us
  // byte-identical in every case, including when the mapped size is longer than the image size text.
  const std::uint64_t blocks = bmap.blocks_count();
  const std::uint64_t mapped = bmap.mapped_blocks_count();
  const std::string image_size_human = human_size(bmap.image_size);
  std::string xml =
      "<?xml version=\"1.0\" ?>\n"
      "<!-- This file contains the block map for an image file, which is basically\n"
      "     a list of useful (mapped) block numbers in the image file. In other words,\n"
      "     it lists only those blocks which contain data (boot sector, partition\n"
      "     table, file-system metadata, files, directories, extents, etc). These\n"
      "     blocks have to be copied to the target device. The other blocks do not\n"
      "     contain any useful data and do not have to be copied to the target\n"
      "     device.\n"
      "\n"
      "     The block map an optimization which allows to copy or flash the image to\n"
      "     the image quicker than copying of flashing the entire image. This is\n"
      "     because with bmap less data is copied: <MappedBlocksCount> blocks instead\n"
      "     of <BlocksCount> blocks.\n"
      "\n"
      "     Besides the machine-readable data, this file contains useful commentaries\n"
      "     which contain human-readable information like image size, percentage of\n"
      "     mapped data, etc.\n"
      "\n"
      "     The 'version' attribute is the block map file format version in the\n"
      "     'major.minor' format. The version major number is increased whenever an\n"
      "     incompatible block map format change is made. The minor number changes\n"
      "     in case of minor backward-compatible changes. -->\n"
      "\n"
      "<bmap version=\"2.0\">\n"
      "    <!-- Image size in bytes: " +
      image_size_human +
      " -->\n"
      "    <ImageSize> " +
      std::to_string(bmap.image_size) +
      " </ImageSize>\n"
      "\n"
      "    <!-- Size of a block in bytes -->\n"
      "    <BlockSize> " +
      std::to_string(bmap.block_size) +
      " </BlockSize>\n"
      "\n"
      "    <!-- Count of blocks in the image file -->\n"
      "    <BlocksCount> " +
      std::to_string(blocks) +
      " </BlocksCount>\n"
      "\n"
      "    <!-- Count of mapped blocks: ";
  const std::size_t mapped_comment_position = xml.size();
  xml += std::string(image_size_human.size(), ' ') + " or " + std::string(6, ' ') + "   -->\n";
  xml += "    <MappedBlocksCount> ";
  const std::size_t mapped_count_position = xml.size();
  xml += std::string(std::to_string(blocks).size(), ' ') + " </MappedBlocksCount>\n\n";
  xml += "    <!-- Type of checksum used in this file -->\n";
  xml += "    <ChecksumType> sha256 </ChecksumType>\n\n";
  xml += "    <!-- The checksum of this bmap file. When it is calculated, the value of\n";
  xml += "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n";
  xml += "    <BmapFileChecksum> ";
  const std::size_t checksum_position = xml.size();
  xml += std::string(checksum_hex_length, '0') + " </BmapFileChecksum>\n\n";
  xml += "    <!-- The block map which consists of elements which may either be a\n";
  xml += "         range of blocks or a single block. The 'chksum' attribute\n";
  xml += "         (if present) is the checksum of this blocks range. -->\n";
  xml += "    <BlockMap>\n";
  for (const auto& range : bmap.ranges) {
    xml += "        <Range";
    if (range.sha256) xml += " chksum=\"" + range.sha256->hex() + "\"";
    xml += "> " + std::to_string(range.first_block);
    if (range.last_block != range.first_block) xml += "-" + std::to_string(range.last_block);
    xml += " </Range>\n";
  }
  xml += "    </BlockMap>\n";
  xml += "</bmap>\n";

  char percent[32];
  std::snprintf(percent, sizeof percent, "%.1f%%",
                blocks == 0 ? 0.0 : static_cast<double>(mapped) * 100.0 / static_cast<double>(blocks));
  std::string mapped_comment = human_size(mapped * bmap.block_size) + " or " + percent;
  xml.replace(mapped_comment_position, mapped_comment.size(), mapped_comment);
  std::string mapped_count = std::to_string(mapped);
  xml.replace(mapped_count_position, mapped_count.size(), mapped_count);
  std::string checksum = Sha256::of(xml).hex();
  xml.replace(checksum_position, checksum.size(), checksum);
  return xml;
}

void write_bmap_file(const Bmap& bmap, const std::filesystem::path& path) {
  std::string text = format_bmap(bmap);
  std::filesystem::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(partial, ignored);
      throw Error("cannot write bmap file " + partial.string());
    }
  }
  std::error_code error;
  std::filesystem::rename(partial, path, error);
  if (error) {
    std::filesystem::remove(partial, error);
    throw Error("cannot rename " + partial.string() + " to " + path.string() + ": " + error.message());
  }
}

Bmap parse_bmap(std::string_view text, const std::string& source_name) {
  const BmapXmlDocument document = BmapXmlReader(text, source_name).read();
  auto fail = [&](const std::string& what) -> Error { return Error(source_name + ": " + what); };
  auto at_line = [](const BmapXmlElement& element) { return " (line " + std::to_string(element.line) + ")"; };
  if (document.root_name != "bmap") throw fail("not a bmap file (the root element is <" + document.root_name + ">)");
  if (!document.version) throw fail("<bmap> has no version attribute");
  std::string_view version_text = trim(*document.version);
  if (!(version_text.starts_with("2.") || version_text == "1.4")) {
    throw fail("bmap format version " + std::string(version_text) +
               " is not supported (only 2.x, as written by bmaptool 3.1 and later)");
  }
  auto number = [&](const char* element_name) {
    const BmapXmlElement* element = document.field(element_name);
    if (element == nullptr) throw fail(std::string("missing <") + element_name + ">");
    auto value = parse_number(trim(element->text));
    if (!value) {
      throw fail(std::string("<") + element_name + "> is not a number: '" + element->text + "'" + at_line(*element));
    }
    return *value;
  };

  const BmapXmlElement* checksum_type = document.field("ChecksumType");
  if (checksum_type == nullptr) throw fail("missing <ChecksumType>");
  if (trim(checksum_type->text) != "sha256") {
    throw fail("checksum type '" + std::string(trim(checksum_type->text)) + "' is not supported (only sha256)" +
               at_line(*checksum_type));
  }
  const BmapXmlElement* file_checksum = document.field("BmapFileChecksum");
  if (file_checksum == nullptr) throw fail("missing <BmapFileChecksum>");
  std::string_view stated = trim(file_checksum->text);
  auto stated_digest = Sha256Digest::parse(stated);
  if (!stated_digest || stated.size() != checksum_hex_length) {
    throw fail("<BmapFileChecksum> is not a sha256: '" + std::string(stated) + "'" + at_line(*file_checksum));
  }
  // The checksum covers the file as written, with its own value replaced by zeros (bmaptool replaces
  // the value's text), so the value must stand in the file as it was read: not spelled with character
  // references, not split by a comment.
  std::size_t value_position = text.find(stated, file_checksum->text_offset);
  if (!file_checksum->has_text || value_position == std::string_view::npos) {
    throw fail("<BmapFileChecksum> must hold its 64 hex digits as plain text" + at_line(*file_checksum));
  }
  std::string zeroed(text);
  zeroed.replace(value_position, checksum_hex_length, std::string(checksum_hex_length, '0'));
  Sha256Digest calculated = Sha256::of(zeroed);
  if (calculated != *stated_digest) {
    throw fail("bmap file checksum mismatch: calculated " + calculated.hex() + ", the file says " +
               std::string(stated) + " (the file was changed or damaged)");
  }

  Bmap bmap;
  bmap.image_size = number("ImageSize");
  std::uint64_t block_size = number("BlockSize");
  if (block_size == 0 || block_size > (1u << 30)) throw fail("block size " + std::to_string(block_size) + " is not usable");
  bmap.block_size = static_cast<std::uint32_t>(block_size);
  std::uint64_t blocks = number("BlocksCount");
  std::uint64_t mapped = number("MappedBlocksCount");
  if (blocks != bmap.blocks_count()) {
    throw fail("inconsistent bmap: " + std::to_string(bmap.image_size) + " bytes in blocks of " +
               std::to_string(block_size) + " are " + std::to_string(bmap.blocks_count()) + " blocks, not " +
               std::to_string(blocks));
  }

  if (document.field("BlockMap") == nullptr) throw fail("missing <BlockMap>");
  for (const auto& element : document.ranges) {
    std::string_view range_text = trim(element.text);
    std::size_t dash = range_text.find('-');
    auto first = parse_number(range_text.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : parse_number(range_text.substr(dash + 1));
    if (!first || !last || *first > *last) throw fail("bad block range '" + std::string(range_text) + "'" + at_line(element));
    if (*last >= blocks) {
      throw fail("block range " + std::string(range_text) + " goes past the image's " + std::to_string(blocks) +
                 " blocks" + at_line(element));
    }
    if (!bmap.ranges.empty() && *first <= bmap.ranges.back().last_block) {
      throw fail("block range " + std::string(range_text) + " overlaps or precedes the range before it" +
                 at_line(element));
    }
    BmapRange range{*first, *last, std::nullopt};
    if (element.checksum) {
      range.sha256 = Sha256Digest::parse(trim(*element.checksum));
      if (!range.sha256 || trim(*element.checksum).size() != checksum_hex_length) {
        throw fail("block range " + std::string(range_text) + " has a bad sha256 '" + *element.checksum + "'" +
                   at_line(element));
      }
    }
    bmap.ranges.push_back(range);
  }
  if (bmap.mapped_blocks_count() != mapped) {
    throw fail("inconsistent bmap: <MappedBlocksCount> says " + std::to_string(mapped) + " but the ranges hold " +
               std::to_string(bmap.mapped_blocks_count()) + " blocks");
  }
  return bmap;
}

Bmap read_bmap_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open bmap file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw Error("cannot read bmap file " + path.string());
  return parse_bmap(text.str(), path.string());
}

}  // namespace aggrik8s
