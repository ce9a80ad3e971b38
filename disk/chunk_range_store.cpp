#include "disk/chunk_range_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/positional_io.hpp"
#include "core/sha256.hpp"

namespace aggrik8s {

namespace {

constexpr std::string_view store_magic = "aggrik8s-image chunk ranges 1";
// More ranges than blocks cannot be; this only keeps a damaged count from reserving memory.
constexpr std::uint64_t max_ranges_per_chunk = 1 << 20;

std::string header(std::uint64_t block_size, std::uint64_t split_blocks) {
  return std::string(store_magic) + " block_size=" + std::to_string(block_size) +
         " split_blocks=" + std::to_string(split_blocks) + "\n";
}

// Splits `line` at spaces; numbers must be plain decimal.
std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  while (!line.empty()) {
    std::size_t space = line.find(' ');
    out.push_back(line.substr(0, space));
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
  }
  return out;
}
std::optional<std::uint64_t> number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

}  // namespace

std::string format_chunk_ranges(const ChunkRangeEntries& entries, std::uint64_t block_size, std::uint64_t split_blocks) {
  std::string text = header(block_size, split_blocks);
  for (const auto& [key, ranges] : entries.chunks) {
    text += "chunk " + std::to_string(key.first) + " " + std::to_string(key.second) + " " + std::to_string(ranges.size()) + "\n";
    for (const auto& range : ranges) {
      text += std::to_string(range.first_block) + " " + std::to_string(range.last_block) + " " +
              (range.sha256 ? range.sha256->hex() : std::string("-")) + "\n";
    }
  }
  text += "end " + Sha256::of(text).hex() + "\n";
  return text;
}

std::optional<ChunkRangeEntries> parse_chunk_ranges(const std::string& text, std::uint64_t block_size,
                                                    std::uint64_t split_blocks, const std::string& name) {
  auto reject = [&](const std::string& why) -> std::optional<ChunkRangeEntries> {
    log::debug(name, ": ignored (", why, ")");
    return std::nullopt;
  };
  const std::string expected_header = header(block_size, split_blocks);
  if (text.compare(0, expected_header.size(), expected_header) != 0) return reject("not a store for these block sizes");
  // The last line seals everything before it.
  const std::size_t end_line = text.rfind("\nend ");
  if (end_line == std::string::npos || text.empty() || text.back() != '\n') return reject("no end line: torn?");
  const std::string_view body(text.data(), end_line + 1);
  const auto seal = Sha256Digest::parse(std::string_view(text).substr(end_line + 5, text.size() - end_line - 6));
  if (!seal || *seal != Sha256::of(body)) return reject("its checksum does not match");

  ChunkRangeEntries entries;
  std::istringstream lines{std::string(body.substr(expected_header.size()))};
  std::string line;
  while (std::getline(lines, line)) {
    const auto head = words(line);
    if (head.size() != 4 || head[0] != "chunk") return reject("expected a chunk line, found '" + line + "'");
    const auto offset = number(head[1]);
    const auto length = number(head[2]);
    const auto count = number(head[3]);
    if (!offset || !length || !count || *length == 0 || *count > max_ranges_per_chunk) return reject("bad chunk line '" + line + "'");
    const std::uint64_t blocks = *length / block_size + (*length % block_size != 0 ? 1 : 0);
    std::vector<BmapRange> ranges;
    for (std::uint64_t i = 0; i < *count; ++i) {
      if (!std::getline(lines, line)) return reject("a chunk's ranges end early");
      const auto fields = words(line);
      if (fields.size() != 3) return reject("bad range line '" + line + "'");
      const auto first = number(fields[0]);
      const auto last = number(fields[1]);
      const auto digest = Sha256Digest::parse(fields[2]);
      if (!first || !last || *first > *last || *last >= blocks || !digest ||
          (!ranges.empty() && *first <= ranges.back().last_block)) {
        return reject("bad range line '" + line + "'");
      }
      ranges.push_back(BmapRange{*first, *last, *digest});
    }
    entries.chunks[{*offset, *length}] = std::move(ranges);
  }
  return entries;
}

CopiedChunkRanges::CopiedChunkRanges(std::filesystem::path dir, const CopiedFiles& copied,
                                     std::vector<std::string> content_sha256, std::uint64_t block_size,
                                     std::uint64_t split_blocks)
    : dir_(std::move(dir)),
      ranges_(copied.ranges),
      keys_(std::move(content_sha256)),
      block_size_(block_size),
      split_blocks_(split_blocks),
      entries_(copied.paths.size()),
      changed_(copied.paths.size(), false) {
  keys_.resize(copied.paths.size());
  std::sort(ranges_.begin(), ranges_.end(),
            [](const CopiedRange& a, const CopiedRange& b) { return a.image_offset < b.image_offset; });
  for (std::size_t file = 0; file < keys_.size(); ++file) {
    // Only a real digest names a store: the key becomes a file name.
    if (!keys_[file].empty() && !Sha256Digest::parse(keys_[file])) keys_[file].clear();
    load_store(file);
  }
}

void CopiedChunkRanges::load_store(std::size_t file) {
  if (keys_[file].empty()) return;
  std::ifstream in(store_path(file), std::ios::binary);
  if (!in) return;
  std::ostringstream text;
  text << in.rdbuf();
  if (auto entries = parse_chunk_ranges(text.str(), block_size_, split_blocks_, store_path(file).string())) {
    entries_[file] = std::move(*entries);
  }
}

std::filesystem::path CopiedChunkRanges::store_path(std::size_t file) const {
  return dir_ / (keys_[file] + ".b" + std::to_string(block_size_) + ".s" + std::to_string(split_blocks_));
}

std::optional<CopiedChunkRanges::Location> CopiedChunkRanges::locate(std::uint64_t offset, std::uint64_t length) const {
  auto range = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                                [](std::uint64_t at, const CopiedRange& r) { return at < r.image_offset; });
  if (range == ranges_.begin()) return std::nullopt;
  --range;
  if (offset + length > range->image_offset + range->length) return std::nullopt;
  // A chunk holding a range's zeroed tail is not the file's bytes at that location.
  if (offset + length > range->image_offset + range->data_bytes()) return std::nullopt;
  if (keys_[range->file].empty()) return std::nullopt;
  // Ranges are counted in blocks from the chunk's start, so the chunk must start on a block of the file.
  const std::uint64_t file_offset = range->file_offset + (offset - range->image_offset);
  if (offset % block_size_ != 0) return std::nullopt;
  return Location{range->file, file_offset};
}

void CopiedChunkRanges::compare_with(const std::filesystem::path& file, const std::string& content_sha256) {
  if (reference_) throw Error("cannot compare chunks with " + file.string() + ": they are compared with " + reference_->name);
  auto reference = std::make_unique<Reference>();
  reference->file = entries_.size();
  reference->name = file.string();
  reference->fd = FileDescriptor(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!reference->fd) throw_system_error("cannot open " + file.string(), errno);
  struct stat st {};
  if (::fstat(reference->fd.get(), &st) != 0) throw_system_error("cannot stat " + file.string(), errno);
  reference->size = static_cast<std::uint64_t>(st.st_size);
  reference->buffer.resize(256 << 10);
  std::lock_guard lock(mutex_);
  keys_.push_back(Sha256Digest::parse(content_sha256) ? content_sha256 : std::string());
  entries_.emplace_back();
  changed_.push_back(false);
  const std::size_t index = reference->file;
  reference_ = std::move(reference);
  load_store(index);
}

bool CopiedChunkRanges::same_as_reference(std::uint64_t offset, std::span<const std::uint8_t> bytes) {
  Reference& reference = *reference_;
  std::lock_guard lock(reference.mutex);
  for (std::size_t done = 0; done < bytes.size();) {
    const std::size_t piece = std::min(reference.buffer.size(), bytes.size() - done);
    if (pread_up_to(reference.fd.get(), offset + done, reference.buffer.data(), piece, reference.name) != piece) return false;
    if (std::memcmp(reference.buffer.data(), bytes.data() + done, piece) != 0) return false;
    done += piece;
  }
  return true;
}

std::optional<std::vector<BmapRange>> CopiedChunkRanges::find(std::uint64_t offset, std::span<const std::uint8_t> bytes) {
  const std::uint64_t length = bytes.size();
  std::optional<Location> where = locate(offset, length);
  if (!where) {
    // Ranges are counted from the chunk's start: it must start on a block of the file too.
    if (!reference_ || keys_[reference_->file].empty() || offset % block_size_ != 0 || offset + length > reference_->size ||
        !same_as_reference(offset, bytes)) {
      return std::nullopt;
    }
    where = Location{reference_->file, offset};
  }
  std::lock_guard lock(mutex_);
  const auto& chunks = entries_[where->file].chunks;
  auto entry = chunks.find({where->file_offset, length});
  if (entry == chunks.end()) {
    if (reference_ && where->file == reference_->file) same_as_reference_.insert({offset, length});
    return std::nullopt;
  }
  std::vector<BmapRange> ranges = entry->second;
  const std::uint64_t first_block = offset / block_size_;
  for (auto& range : ranges) {
    range.first_block += first_block;
    range.last_block += first_block;
  }
  found_bytes_ += length;
  return ranges;
}

void CopiedChunkRanges::hashed(std::uint64_t offset, std::uint64_t length, const std::vector<BmapRange>& ranges) {
  std::optional<Location> where = locate(offset, length);
  if (!where) {
    std::lock_guard lock(mutex_);
    if (same_as_reference_.erase({offset, length}) == 0) return;
    where = Location{reference_->file, offset};
  }
  std::vector<BmapRange> relative = ranges;
  const std::uint64_t first_block = offset / block_size_;
  for (auto& range : relative) {
    range.first_block -= first_block;
    range.last_block -= first_block;
  }
  std::lock_guard lock(mutex_);
  entries_[where->file].chunks[{where->file_offset, length}] = std::move(relative);
  changed_[where->file] = true;
}

std::uint64_t CopiedChunkRanges::found_bytes() const {
  std::lock_guard lock(mutex_);
  return found_bytes_;
}

void CopiedChunkRanges::save() {
  std::lock_guard lock(mutex_);
  for (std::size_t file = 0; file < entries_.size(); ++file) {
    if (!changed_[file]) continue;
    const std::filesystem::path path = store_path(file);
    // Builds sharing the cache may save at once: each writes its own temporary file, the last rename wins.
    const std::filesystem::path temporary = path.string() + ".tmp-" + std::to_string(::getpid());
    try {
      std::filesystem::create_directories(dir_);
      {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out << format_chunk_ranges(entries_[file], block_size_, split_blocks_);
        out.close();
        if (!out) throw Error("cannot write " + temporary.string());
      }
      std::filesystem::rename(temporary, path);
      changed_[file] = false;
    } catch (const std::exception& e) {
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      log::warning("could not keep the bmap ranges of ", keys_[file], " in the cache (", path.string(), "): ", e.what());
    }
  }
}

}  // namespace aggrik8s
