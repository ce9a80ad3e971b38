#include "builder/talos/talos_extension_image.hpp"

#include <lzma.h>
#include <yaml-cpp/yaml.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

#include "builder/talos/talos_boot_files.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "disk/squashfs_writer.hpp"

namespace aggrik8s::builder {

namespace {

// YAML single-quoted scalar: safe for any text (">= 1.0.0" would otherwise need care).
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else out += c;
  }
  return out + "'";
}

std::string zstd_compress(const std::string& data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  // Level 18, as Talos' imager compresses its extensions archive (zstd -18).
  std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 18);
  if (ZSTD_isError(n)) throw Error(std::string("zstd: cannot compress the extensions archive: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// newc archives fed in chunks: keeps the header and name of the current entry and the data of
// /extensions.yaml only.
class NewcScanner {
 public:
  static constexpr std::size_t broken = static_cast<std::size_t>(-1);
  // How many bytes were taken (all of them unless `stop_after_trailer` and a trailer ended), or
  // `broken` when the bytes are not newc where a header is expected.
  std::size_t feed(const std::uint8_t* data, std::size_t size, bool stop_after_trailer = false) {
    const std::size_t total = size;
    while (size > 0) {
      if (stop_after_trailer && state_ == State::between) return total - size;
      if (state_ == State::header) {
        std::size_t take = std::min(size, 110 - header_.size());
        header_.append(reinterpret_cast<const char*>(data), take);
        data += take;
        size -= take;
        if (header_.size() < 110) return total;
        if (header_.compare(0, 6, "070701") != 0 && header_.compare(0, 6, "070702") != 0) return broken;
        file_size_ = field(54);
        name_size_ = field(94);
        name_.clear();
        state_ = State::name;
        // The name is padded so that header + name is a multiple of 4.
        name_left_ = (110 + name_size_ + 3) / 4 * 4 - 110;
      } else if (state_ == State::name) {
        std::size_t take = std::min(size, name_left_);
        name_.append(reinterpret_cast<const char*>(data), take);
        data += take;
        size -= take;
        name_left_ -= take;
        if (name_left_ > 0) return total;
        name_.resize(std::min<std::size_t>(name_.size(), name_size_ > 0 ? name_size_ - 1 : 0));
        while (name_.starts_with("./")) name_.erase(0, 2);
        while (name_.starts_with("/")) name_.erase(0, 1);
        capture_ = name_ == "extensions.yaml";
        if (capture_) content_.clear();
        data_left_ = (file_size_ + 3) / 4 * 4;
        kept_ = file_size_;
        state_ = State::data;
        if (name_ == "TRAILER!!!") state_ = State::between;
        header_.clear();
        if (state_ == State::data && data_left_ == 0) state_ = State::header;
      } else if (state_ == State::data) {
        std::size_t take = std::min(size, data_left_);
        if (capture_) {
          std::size_t keep = std::min(take, kept_);
          content_.append(reinterpret_cast<const char*>(data), keep);
          kept_ -= keep;
        }
        data += take;
        size -= take;
        data_left_ -= take;
        if (data_left_ == 0) {
          if (capture_) extensions_yaml_ = content_;
          state_ = State::header;
        }
      } else {
        // After a trailer: zero padding, then perhaps another archive in the same stream.
        while (size > 0 && *data == 0) {
          ++data;
          --size;
        }
        if (size > 0) state_ = State::header;
      }
    }
    return total;
  }
  bool after_trailer() const { return state_ == State::between; }
  const std::optional<std::string>& extensions_yaml() const { return extensions_yaml_; }
  void reset() {
    state_ = State::header;
    header_.clear();
  }

 private:
  enum class State { header, name, data, between };
  std::size_t field(std::size_t at) const { return std::stoul(header_.substr(at, 8), nullptr, 16); }
  State state_ = State::header;
  std::string header_;
  std::string name_;
  std::string content_;
  std::size_t file_size_ = 0;
  std::size_t name_size_ = 0;
  std::size_t name_left_ = 0;
  std::size_t data_left_ = 0;
  std::size_t kept_ = 0;
  bool capture_ = false;
  std::optional<std::string> extensions_yaml_;
};

}  // namespace

std::vector<TalosExtensionLayer> parse_talos_extensions_yaml(const std::string& text) {
  std::vector<TalosExtensionLayer> layers;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error("/extensions.yaml in the initramfs is not YAML: " + std::string(e.what()));
  }
  if (!root["layers"]) return layers;
  if (!root["layers"].IsSequence()) throw Error("/extensions.yaml in the initramfs: 'layers' is not a list");
  std::size_t i = 0;
  for (const auto& layer : root["layers"]) {
    auto text_of = [&](const YAML::Node& node, const char* what) {
      if (!node || !node.IsScalar()) throw Error("/extensions.yaml in the initramfs: layers[" + std::to_string(i) + "] has no " + what);
      return node.as<std::string>();
    };
    TalosExtensionLayer l;
    l.image = text_of(layer["image"], "image");
    const YAML::Node metadata = layer["metadata"];
    l.name = text_of(metadata["name"], "metadata.name");
    l.version = metadata["version"] ? metadata["version"].as<std::string>() : "";
    l.author = metadata["author"] ? metadata["author"].as<std::string>() : "";
    l.description = metadata["description"] ? metadata["description"].as<std::string>() : "";
    l.talos_version = metadata["compatibility"] && metadata["compatibility"]["talos"] && metadata["compatibility"]["talos"]["version"]
                          ? metadata["compatibility"]["talos"]["version"].as<std::string>()
                          : "";
    layers.push_back(std::move(l));
    ++i;
  }
  return layers;
}

std::vector<TalosExtensionLayer> initramfs_extension_layers(std::string_view initramfs, const std::string& name) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(initramfs.data());
  const std::size_t size = initramfs.size();
  NewcScanner scanner;
  std::vector<std::uint8_t> out(1 << 20);
  auto where = [&](std::size_t offset) { return name + " at offset " + std::to_string(offset); };
  std::size_t at = 0;
  while (at < size) {
    if (p[at] == 0) {  // padding between segments
      ++at;
      continue;
    }
    scanner.reset();
    static const std::uint8_t xz_magic[6] = {0xfd, '7', 'z', 'X', 'Z', 0};
    static const std::uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if (size - at >= 6 && std::memcmp(p + at, "07070", 5) == 0) {
      // An uncompressed archive (early microcode, a padding archive): up to its trailer.
      std::size_t taken = scanner.feed(p + at, size - at, true);
      if (taken == NewcScanner::broken) throw Error("cannot read the initramfs " + where(at) + ": a broken newc archive");
      at += taken;
    } else if (size - at >= 6 && std::memcmp(p + at, xz_magic, 6) == 0) {
      lzma_stream strm = LZMA_STREAM_INIT;
      if (lzma_stream_decoder(&strm, UINT64_MAX, 0) != LZMA_OK) throw Error("liblzma: cannot start a decoder");
      strm.next_in = p + at;
      strm.avail_in = size - at;
      lzma_ret ret = LZMA_OK;
      while (ret == LZMA_OK) {
        strm.next_out = out.data();
        strm.avail_out = out.size();
        ret = lzma_code(&strm, LZMA_FINISH);
        if (scanner.feed(out.data(), out.size() - strm.avail_out) == NewcScanner::broken) {
          lzma_end(&strm);
          throw Error("cannot read the initramfs " + where(at) + ": the xz segment does not hold a newc archive");
        }
      }
      std::size_t consumed = strm.total_in;
      lzma_end(&strm);
      if (ret != LZMA_STREAM_END) throw Error("cannot read the initramfs " + where(at) + ": xz error " + std::to_string(ret));
      at += consumed;
    } else if (size - at >= 4 && std::memcmp(p + at, zstd_magic, 4) == 0) {
      std::unique_ptr<ZSTD_DCtx, std::size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
      ZSTD_inBuffer in{p + at, size - at, 0};
      std::size_t ret = 1;
      while (ret != 0) {
        ZSTD_outBuffer o{out.data(), out.size(), 0};
        std::size_t before = in.pos;
        ret = ZSTD_decompressStream(dctx.get(), &o, &in);
        if (ZSTD_isError(ret)) throw Error("cannot read the initramfs " + where(at) + ": zstd: " + ZSTD_getErrorName(ret));
        if (scanner.feed(out.data(), o.pos) == NewcScanner::broken) {
          throw Error("cannot read the initramfs " + where(at) + ": the zstd segment does not hold a newc archive");
        }
        if (ret != 0 && in.pos == in.size && before == in.pos && o.pos == 0) {
          throw Error("cannot read the initramfs " + where(at) + ": truncated zstd frame");
        }
      }
      at += in.pos;
    } else {
      throw Error("cannot read the initramfs " + where(at) + ": neither a newc archive nor xz nor zstd data");
    }
  }
  if (!scanner.extensions_yaml()) return {};
  return parse_talos_extensions_yaml(*scanner.extensions_yaml());
}

TalosExtensionLayer embedded_config_layer(const std::string& config_yaml, const std::string& image) {
  return {image, "embedded-config", Sha256::of(config_yaml).hex(), "Imager",
          "Virtual extension which embeds the machine configuration.", ">= 1.0.0"};
}

std::string talos_extensions_yaml(const std::vector<TalosExtensionLayer>& layers) {
  std::string out = "layers:\n";
  for (const auto& l : layers) {
    out += "    - image: " + quoted(l.image) + "\n";
    out += "      metadata:\n";
    out += "        name: " + quoted(l.name) + "\n";
    out += "        version: " + quoted(l.version) + "\n";
    out += "        author: " + quoted(l.author) + "\n";
    out += "        description: " + quoted(l.description) + "\n";
    out += "        compatibility:\n";
    out += "            talos:\n";
    out += "                version: " + quoted(l.talos_version) + "\n";
  }
  return out;
}

EmbeddedConfigExtension build_embedded_config_extension(const std::string& config_yaml, std::int64_t epoch,
                                                        const std::vector<TalosExtensionLayer>& existing_layers) {
  EmbeddedConfigExtension extension;
  std::vector<TalosExtensionLayer> layers;
  for (const auto& l : existing_layers) {
    if (l.name != "embedded-config") layers.push_back(l);
  }
  // A name none of the listed images has (Talos' imager numbers them 0.sqsh, 1.sqsh, ...).
  std::size_t image_number = layers.size();
  auto taken = [&](const std::string& image) {
    return std::any_of(existing_layers.begin(), existing_layers.end(), [&](const TalosExtensionLayer& l) { return l.image == image; });
  };
  while (taken(std::to_string(image_number) + ".sqsh")) ++image_number;
  extension.layer = embedded_config_layer(config_yaml, std::to_string(image_number) + ".sqsh");
  layers.push_back(extension.layer);
  // The tree Talos' imager packs: usr/local/etc/talos/config.yaml (0400), directories 0755, all
  // owned by root, every time `epoch`. Built in memory: a mksquashfs process per node (~1 000 page
  // faults to start) cost more than the few kilobytes of image (docs/benchmarks.md, Talos).
  auto directory = [&](std::string path) {
    FilesystemTreeEntry entry;
    entry.path = std::move(path);
    entry.type = Ext4FileType::directory;
    entry.permissions = 0755;
    entry.mtime.seconds = epoch;
    return entry;
  };
  std::vector<FilesystemTreeEntry> tree{directory("/"), directory("/usr"), directory("/usr/local"),
                                        directory("/usr/local/etc"), directory("/usr/local/etc/talos")};
  FilesystemTreeEntry config;
  config.path = "/usr/local/etc/talos/config.yaml";
  config.type = Ext4FileType::regular;
  config.permissions = 0400;
  config.mtime.seconds = epoch;
  config.size = config_yaml.size();
  config.read_data = [&config_yaml](const Ext4FileDataConsumer& consume) {
    consume(0, std::as_bytes(std::span(config_yaml.data(), config_yaml.size())));
  };
  tree.push_back(std::move(config));
  SquashfsWriteOptions options;
  options.fixed_time = epoch;
  options.level = 18;   // as Talos' imager (mksquashfs -comp zstd -Xcompression-level 18)
  options.threads = 1;  // one small file: no compressor threads to start and stop
  std::string squashfs = squashfs_image(tree, options);
  std::string archive = newc_cpio({{extension.layer.image, squashfs, 0644},
                                   {"extensions.yaml", talos_extensions_yaml(layers), 0644}},
                                  epoch);
  extension.initramfs_segment = zstd_compress(archive);
  return extension;
}

}  // namespace aggrik8s::builder
