#include "disk/squashfs_writer.hpp"

#include <sqfs/block.h>
#include <sqfs/block_processor.h>
#include <sqfs/block_writer.h>
#include <sqfs/compressor.h>
#include <sqfs/dir_writer.h>
#include <sqfs/error.h>
#include <sqfs/frag_table.h>
#include <sqfs/id_table.h>
#include <sqfs/inode.h>
#include <sqfs/io.h>
#include <sqfs/meta_writer.h>
#include <sqfs/super.h>
#include <sqfs/xattr_writer.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/sha256.hpp"
#include "disk/partial_output_file.hpp"

namespace aggrik8s {

const std::vector<std::string>& squashfs_compressor_names() {
  static const std::vector<std::string> names = {"zstd", "xz", "gzip", "lz4"};
  return names;
}

namespace {

std::string describe_sqfs_error(int code) {
  switch (code) {
    case SQFS_ERROR_ALLOC: return "out of memory";
    case SQFS_ERROR_IO: return std::string("input/output error (") + std::strerror(errno) + ")";
    case SQFS_ERROR_COMPRESSOR: return "the compressor failed";
    case SQFS_ERROR_INTERNAL: return "internal error in libsquashfs";
    case SQFS_ERROR_CORRUPTED: return "corrupted data";
    case SQFS_ERROR_UNSUPPORTED: return "not supported by squashfs";
    case SQFS_ERROR_OVERFLOW: return "a size or count is too large for squashfs";
    case SQFS_ERROR_OUT_OF_BOUNDS: return "out of bounds";
    case SQFS_ERROR_ARG_INVALID: return "invalid argument";
    case SQFS_ERROR_SEQUENCE: return "call out of sequence";
    default: return "libsquashfs error " + std::to_string(code);
  }
}

struct SqfsDestroy {
  void operator()(void* object) const {
    if (object != nullptr) sqfs_destroy(object);
  }
};
template <typename T>
using SqfsObject = std::unique_ptr<T, SqfsDestroy>;

struct SqfsFree {
  void operator()(void* memory) const { sqfs_free(memory); }
};
using SqfsInode = std::unique_ptr<sqfs_inode_generic_t, SqfsFree>;

SqfsInode allocate_inode(std::size_t extra_bytes) {
  // libsquashfs frees inodes with free() (sqfs_free); they are allocated the same way.
  auto* inode = static_cast<sqfs_inode_generic_t*>(std::calloc(1, sizeof(sqfs_inode_generic_t) + extra_bytes));
  if (inode == nullptr) throw std::bad_alloc();
  return SqfsInode(inode);
}

// Linux's new_encode_dev, which the kernel's squashfs decodes with new_decode_dev.
std::uint32_t encode_device_number(std::uint32_t major, std::uint32_t minor) {
  return (minor & 0xffU) | (major << 8) | ((minor & ~0xffU) << 12);
}

bool squashfs_stores_xattr(const std::string& name) {
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.");
}

// One inode of the image. Directories list (name, inode) pairs, so a hard link is a second pair
// naming the same node.
struct SquashfsNode {
  Ext4FileType type = Ext4FileType::regular;
  std::uint16_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t mtime = 0;
  std::uint32_t xattr_index = 0xffffffffU;
  std::uint32_t link_count = 1;
  std::string symlink_target;
  std::uint32_t device_number = 0;
  // Regular files: created by the block processor, which keeps updating (and reallocating) it until
  // sqfs_block_processor_finish; hence nodes live in a deque, whose elements never move.
  sqfs_inode_generic_t* file_inode = nullptr;
  SquashfsNode* parent = nullptr;
  std::vector<std::pair<std::string, SquashfsNode*>> entries;
  std::uint32_t inode_number = 0;
  std::uint64_t inode_reference = 0;

  SquashfsNode() = default;
  SquashfsNode(const SquashfsNode&) = delete;
  SquashfsNode& operator=(const SquashfsNode&) = delete;
  ~SquashfsNode() { sqfs_free(file_inode); }
};

class SquashfsImageWriter {
 public:
  // `file` is where the image goes (the writer owns it from here); `name` names it in messages.
  SquashfsImageWriter(std::string name, SqfsObject<sqfs_file_t> file, const SquashfsWriteOptions& options,
                      std::uint32_t superblock_time)
      : name_(std::move(name)), options_(options), file_(std::move(file)) {
    int compressor_id = sqfs_compressor_id_from_name(options.compressor.c_str());
    if (compressor_id < 0 ||
        std::find(squashfs_compressor_names().begin(), squashfs_compressor_names().end(), options.compressor) ==
            squashfs_compressor_names().end()) {
      throw Error("squashfs compressor '" + options.compressor + "' is not one of zstd, xz, gzip, lz4");
    }
    const std::uint32_t block_size = options.block_size;
    if (block_size < SQFS_MIN_BLOCK_SIZE || block_size > SQFS_MAX_BLOCK_SIZE || (block_size & (block_size - 1)) != 0) {
      throw Error("squashfs block size " + std::to_string(block_size) +
                  " is not a power of two from 4096 to 1048576 bytes");
    }
    sqfs_compressor_config_t config{};
    check(sqfs_compressor_config_init(&config, static_cast<SQFS_COMPRESSOR>(compressor_id), block_size, 0),
          "set up the " + options.compressor + " compressor");
    if (options.level) config.level = *options.level;
    sqfs_compressor_t* compressor = nullptr;
    check(sqfs_compressor_create(&config, &compressor), "create the " + options.compressor + " compressor");
    compressor_.reset(compressor);
    // A decompressor lets fragment deduplication compare candidates byte for byte, not by hash alone.
    config.flags |= SQFS_COMP_FLAG_UNCOMPRESS;
    sqfs_compressor_t* decompressor = nullptr;
    check(sqfs_compressor_create(&config, &decompressor), "create the " + options.compressor + " decompressor");
    decompressor_.reset(decompressor);

    check(sqfs_super_init(&super_, block_size, superblock_time, static_cast<SQFS_COMPRESSOR>(compressor_id)),
          "set up the superblock");
    // Written now to reserve its place, and again at the end with the table positions.
    check(sqfs_super_write(&super_, file_.get()), "write the superblock");
    int options_written = compressor_->write_options(compressor_.get(), file_.get());
    if (options_written < 0) check(options_written, "write the compressor options");
    if (options_written > 0) super_.flags |= SQFS_FLAG_COMPRESSOR_OPTIONS;

    block_writer_.reset(sqfs_block_writer_create(file_.get(), SQFS_DEVBLK_SIZE, 0));
    fragment_table_.reset(sqfs_frag_table_create(0));
    id_table_.reset(sqfs_id_table_create(0));
    xattr_writer_.reset(sqfs_xattr_writer_create(0));
    inode_table_.reset(sqfs_meta_writer_create(file_.get(), compressor_.get(), 0));
    // The directory table follows the inode table in the file, so it is kept in memory until then.
    directory_table_.reset(sqfs_meta_writer_create(file_.get(), compressor_.get(), SQFS_META_WRITER_KEEP_IN_MEMORY));
    if (!block_writer_ || !fragment_table_ || !id_table_ || !xattr_writer_ || !inode_table_ || !directory_table_) {
      throw Error(name_ + ": cannot set up the squashfs writer: out of memory");
    }
    directory_writer_.reset(sqfs_dir_writer_create(directory_table_.get(), 0));
    if (!directory_writer_) throw Error(name_ + ": cannot set up the squashfs directory writer: out of memory");

    sqfs_block_processor_desc_t description{};
    description.size = sizeof(description);
    description.max_block_size = block_size;
    description.num_workers = options.threads != 0 ? options.threads : std::max(1U, std::thread::hardware_concurrency());
    // gensquashfs's default: enough queued blocks that no worker waits for the reader.
    description.max_backlog = 10 * description.num_workers;
    description.cmp = compressor_.get();
    description.wr = block_writer_.get();
    description.tbl = fragment_table_.get();
    description.file = file_.get();
    description.uncmp = decompressor_.get();
    sqfs_block_processor_t* processor = nullptr;
    check(sqfs_block_processor_create_ex(&description, &processor), "start the block processor");
    processor_.reset(processor);
  }

  void add(const FilesystemTreeEntry& entry) {
    SquashfsNode* parent = nullptr;
    std::string name;
    if (entry.path != "/") {
      auto found = directories_.find(parent_tree_path(entry.path));
      // The selection left out the directory this lies in: a squashfs is one tree, so its contents go too.
      if (found == directories_.end()) return;
      parent = found->second;
      name = entry.path.substr(entry.path.rfind('/') + 1);
    } else if (root_ != nullptr) {
      throw Error("the tree walk gave the root directory twice");
    }

    // Another name of an inode already added (hard-linked files, and symlinks or device nodes as
    // cp -al and busybox installs make them): one squashfs inode, one more link.
    if (entry.type != Ext4FileType::directory && entry.inode != 0) {
      if (auto linked = hard_links_.find(entry.inode); linked != hard_links_.end()) {
        linked->second->link_count++;
        parent->entries.emplace_back(name, linked->second);
        result_.hard_links++;
        return;
      }
    }

    SquashfsNode& node = nodes_.emplace_back();
    node.type = entry.type;
    node.mode = static_cast<std::uint16_t>(file_type_mode_bits(entry.type) | (entry.permissions & 07777));
    node.uid = entry.uid;
    node.gid = entry.gid;
    if (entry.mtime.seconds < 0 || entry.mtime.seconds > 0xffffffffLL) {
      throw Error(entry.path + ": its mtime " + std::to_string(entry.mtime.seconds) +
                  " is outside what squashfs stores (0 to 4294967295 seconds since 1970)");
    }
    node.mtime = static_cast<std::uint32_t>(entry.mtime.seconds);
    node.xattr_index = add_xattrs(entry);
    node.parent = parent;
    if (parent != nullptr) parent->entries.emplace_back(name, &node);
    if (entry.type != Ext4FileType::directory && entry.inode != 0) hard_links_.emplace(entry.inode, &node);

    switch (entry.type) {
      case Ext4FileType::directory:
        node.link_count = 2;
        if (parent != nullptr) parent->link_count++;  // the subdirectory's ".."
        directories_.emplace(entry.path, &node);
        if (parent == nullptr) root_ = &node;
        result_.directories++;
        break;
      case Ext4FileType::regular:
        add_file_data(entry, node);
        result_.regular_files++;
        result_.file_data_bytes += entry.size;
        if (options_.progress) options_.progress({result_.regular_files, result_.file_data_bytes});
        break;
      case Ext4FileType::symlink:
        if (entry.symlink_target.empty()) throw Error(entry.path + ": the symlink has an empty target");
        node.symlink_target = entry.symlink_target;
        result_.symlinks++;
        break;
      case Ext4FileType::character_device:
      case Ext4FileType::block_device:
        node.device_number = encode_device_number(entry.device_major, entry.device_minor);
        result_.special_files++;
        break;
      case Ext4FileType::fifo:
      case Ext4FileType::socket:
        result_.special_files++;
        break;
    }
  }

  // Waits for the compressors, then writes inodes, directories and tables and the final superblock.
  SquashfsWriteResult finish() {
    if (root_ == nullptr) throw Error(name_ + ": the selection left out the root directory");
    check(sqfs_block_processor_finish(processor_.get()), "finish the data blocks");

    // Inode numbers in the order inodes are written: every other inode first, then directories
    // children before parents (a directory's listing needs its entries' positions in the inode
    // table), so the root comes last, as in mksquashfs.
    std::vector<SquashfsNode*> order;
    order.reserve(nodes_.size());
    for (auto& node : nodes_) {
      if (node.type != Ext4FileType::directory) order.push_back(&node);
    }
    append_directories_children_first(*root_, order);
    for (std::size_t i = 0; i < order.size(); ++i) order[i]->inode_number = static_cast<std::uint32_t>(i + 1);

    super_.inode_table_start = file_->get_size(file_.get());
    for (SquashfsNode* node : order) write_inode(*node);
    check(sqfs_meta_writer_flush(inode_table_.get()), "write the inode table");
    check(sqfs_meta_writer_flush(directory_table_.get()), "write the directory table");
    super_.root_inode_ref = root_->inode_reference;
    super_.directory_table_start = file_->get_size(file_.get());
    check(sqfs_meta_write_write_to_file(directory_table_.get()), "write the directory table");
    check(sqfs_frag_table_write(fragment_table_.get(), file_.get(), &super_, compressor_.get()),
          "write the fragment table");
    check(sqfs_id_table_write(id_table_.get(), file_.get(), &super_, compressor_.get()), "write the id table");
    check(sqfs_xattr_writer_flush(xattr_writer_.get(), file_.get(), &super_, compressor_.get()),
          "write the extended attributes");
    super_.inode_count = static_cast<std::uint32_t>(order.size());
    super_.bytes_used = file_->get_size(file_.get());
    check(sqfs_super_write(&super_, file_.get()), "write the superblock");
    // Padded to 4 KiB like mksquashfs and gensquashfs: loop devices and block-sized reads want it.
    std::uint64_t padding = (SQFS_DEVBLK_SIZE - super_.bytes_used % SQFS_DEVBLK_SIZE) % SQFS_DEVBLK_SIZE;
    if (padding > 0) {
      std::array<std::byte, SQFS_DEVBLK_SIZE> zeros{};
      check(file_->write_at(file_.get(), super_.bytes_used, zeros.data(), padding), "pad the image to 4 KiB");
    }
    result_.bytes_written = super_.bytes_used + padding;
    // Closing flushes what sqfs_file_t buffered; its failure would surface only here.
    processor_.reset();
    file_.reset();
    return result_;
  }

 private:
  void check(int code, const std::string& what) const {
    if (code != 0) throw Error(name_ + ": cannot " + what + ": " + describe_sqfs_error(code));
  }

  std::uint32_t add_xattrs(const FilesystemTreeEntry& entry) {
    std::vector<const Ext4ExtendedAttribute*> stored;
    for (const auto& attribute : entry.extended_attributes) {
      if (squashfs_stores_xattr(attribute.name)) {
        stored.push_back(&attribute);
      } else if (options_.drop_unsupported_xattrs) {
        log::warning(entry.path, ": extended attribute ", attribute.name,
                     " left out of the squashfs (it stores only user., trusted. and security.)");
        result_.dropped_xattrs++;
      } else {
        throw Error(entry.path + ": extended attribute " + attribute.name +
                    " cannot be stored in squashfs (only user., trusted. and security. attributes can; POSIX ACLs "
                    "cannot); remove it from the image or allow dropping it");
      }
    }
    if (stored.empty()) return 0xffffffffU;
    check(sqfs_xattr_writer_begin(xattr_writer_.get(), 0), "start the extended attributes of " + entry.path);
    for (const auto* attribute : stored) {
      check(sqfs_xattr_writer_add(xattr_writer_.get(), attribute->name.c_str(), attribute->value.data(),
                                  attribute->value.size()),
            "store the extended attribute " + attribute->name + " of " + entry.path);
    }
    std::uint32_t index = 0;
    check(sqfs_xattr_writer_end(xattr_writer_.get(), &index), "store the extended attributes of " + entry.path);
    return index;
  }

  void append_zeros(std::uint64_t count, const std::string& path) {
    static const std::vector<std::byte> zeros(std::size_t{1} << 20);
    while (count > 0) {
      auto n = static_cast<std::size_t>(std::min<std::uint64_t>(count, zeros.size()));
      check(sqfs_block_processor_append(processor_.get(), zeros.data(), n), "compress the data of " + path);
      count -= n;
    }
  }

  // Holes are given to the block processor as zeros: it stores all-zero blocks as sparse blocks (no
  // data), so a hole costs a zero check per block and nothing in the image.
  void add_file_data(const FilesystemTreeEntry& entry, SquashfsNode& node) {
    check(sqfs_block_processor_begin_file(processor_.get(), &node.file_inode, nullptr, 0),
          "start the data of " + entry.path);
    std::uint64_t position = 0;
    entry.read_data([&](std::uint64_t offset, std::span<const std::byte> data) {
      if (offset < position) throw Error(entry.path + ": data pieces out of order at byte " + std::to_string(offset));
      append_zeros(offset - position, entry.path);
      check(sqfs_block_processor_append(processor_.get(), data.data(), data.size()), "compress the data of " + entry.path);
      position = offset + data.size();
    });
    if (position > entry.size) {
      throw Error(entry.path + ": read " + std::to_string(position) + " bytes from a file of " + std::to_string(entry.size));
    }
    append_zeros(entry.size - position, entry.path);
    check(sqfs_block_processor_end_file(processor_.get()), "finish the data of " + entry.path);
  }

  static void append_directories_children_first(SquashfsNode& directory, std::vector<SquashfsNode*>& order) {
    for (auto& [name, child] : directory.entries) {
      // A directory is never a hard link, so each appears once.
      if (child->type == Ext4FileType::directory && child->parent == &directory) append_directories_children_first(*child, order);
    }
    order.push_back(&directory);
  }

  SqfsInode make_inode(SquashfsNode& node) {
    switch (node.type) {
      case Ext4FileType::directory: {
        check(sqfs_dir_writer_begin(directory_writer_.get(), 0), "start a directory listing");
        for (const auto& [name, child] : node.entries) {
          check(sqfs_dir_writer_add_entry(directory_writer_.get(), name.c_str(), child->inode_number,
                                          child->inode_reference, child->mode),
                "list the directory entry " + name);
        }
        check(sqfs_dir_writer_end(directory_writer_.get()), "finish a directory listing");
        SqfsInode inode(sqfs_dir_writer_create_inode(directory_writer_.get(), node.link_count, node.xattr_index,
                                                     node.parent != nullptr ? node.parent->inode_number : 0));
        if (!inode) throw Error(name_ + ": cannot create a directory inode: out of memory");
        return inode;
      }
      case Ext4FileType::regular: {
        SqfsInode inode(std::exchange(node.file_inode, nullptr));
        if (node.link_count > 1) {
          check(sqfs_inode_make_extended(inode.get()), "extend a file inode");
          inode->data.file_ext.nlink = node.link_count;
        }
        return inode;
      }
      case Ext4FileType::symlink: {
        SqfsInode inode = allocate_inode(node.symlink_target.size());
        inode->base.type = SQFS_INODE_SLINK;
        inode->data.slink.nlink = node.link_count;
        inode->data.slink.target_size = static_cast<std::uint32_t>(node.symlink_target.size());
        std::memcpy(inode->extra, node.symlink_target.data(), node.symlink_target.size());
        return inode;
      }
      case Ext4FileType::character_device:
      case Ext4FileType::block_device: {
        SqfsInode inode = allocate_inode(0);
        inode->base.type = node.type == Ext4FileType::character_device ? SQFS_INODE_CDEV : SQFS_INODE_BDEV;
        inode->data.dev.nlink = node.link_count;
        inode->data.dev.devno = node.device_number;
        return inode;
      }
      case Ext4FileType::fifo:
      case Ext4FileType::socket: {
        SqfsInode inode = allocate_inode(0);
        inode->base.type = node.type == Ext4FileType::fifo ? SQFS_INODE_FIFO : SQFS_INODE_SOCKET;
        inode->data.ipc.nlink = node.link_count;
        return inode;
      }
    }
    throw Error(name_ + ": unknown file type");
  }

  void write_inode(SquashfsNode& node) {
    SqfsInode inode = make_inode(node);
    inode->base.mode = node.mode;
    inode->base.mod_time = node.mtime;
    inode->base.inode_number = node.inode_number;
    check(sqfs_inode_set_xattr_index(inode.get(), node.xattr_index), "set an inode's extended attributes");
    check(sqfs_id_table_id_to_index(id_table_.get(), node.uid, &inode->base.uid_idx), "store the owner id");
    check(sqfs_id_table_id_to_index(id_table_.get(), node.gid, &inode->base.gid_idx), "store the group id");
    sqfs_u64 block = 0;
    sqfs_u32 offset = 0;
    sqfs_meta_writer_get_position(inode_table_.get(), &block, &offset);
    node.inode_reference = (block << 16) | offset;
    check(sqfs_meta_writer_write_inode(inode_table_.get(), inode.get()), "write an inode");
  }

  std::string name_;
  const SquashfsWriteOptions& options_;
  sqfs_super_t super_{};
  SquashfsWriteResult result_;
  // Nodes outlive the block processor, which holds pointers into them until it is destroyed.
  std::deque<SquashfsNode> nodes_;
  SquashfsNode* root_ = nullptr;
  std::unordered_map<std::string, SquashfsNode*> directories_;
  std::unordered_map<std::uint32_t, SquashfsNode*> hard_links_;
  SqfsObject<sqfs_file_t> file_;
  SqfsObject<sqfs_compressor_t> compressor_;
  SqfsObject<sqfs_compressor_t> decompressor_;
  SqfsObject<sqfs_block_writer_t> block_writer_;
  SqfsObject<sqfs_frag_table_t> fragment_table_;
  SqfsObject<sqfs_id_table_t> id_table_;
  SqfsObject<sqfs_xattr_writer_t> xattr_writer_;
  SqfsObject<sqfs_meta_writer_t> inode_table_;
  SqfsObject<sqfs_meta_writer_t> directory_table_;
  SqfsObject<sqfs_dir_writer_t> directory_writer_;
  SqfsObject<sqfs_block_processor_t> processor_;
};

std::uint32_t superblock_time(std::int64_t root_mtime, const SquashfsWriteOptions& options) {
  std::int64_t seconds = options.fixed_time ? *options.fixed_time : root_mtime;
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(seconds, 0, 0xffffffffLL));
}

// A sqfs_file_t over a string the caller owns, for images built in memory. libsquashfs hands back
// &file, the first member, so the callbacks cast it back to the whole.
struct MemoryFile {
  sqfs_file_t file{};
  std::string* bytes = nullptr;
};

MemoryFile& memory_file_of(const void* file) { return *reinterpret_cast<MemoryFile*>(const_cast<void*>(file)); }

SqfsObject<sqfs_file_t> open_memory_file(std::string& bytes) {
  auto* memory = new MemoryFile;
  memory->bytes = &bytes;
  memory->file.base.destroy = [](sqfs_object_t* object) { delete &memory_file_of(object); };
  memory->file.read_at = [](sqfs_file_t* file, sqfs_u64 offset, void* buffer, size_t size) -> int {
    const std::string& b = *memory_file_of(file).bytes;
    if (offset > b.size() || size > b.size() - offset) return SQFS_ERROR_OUT_OF_BOUNDS;
    std::memcpy(buffer, b.data() + offset, size);
    return 0;
  };
  memory->file.write_at = [](sqfs_file_t* file, sqfs_u64 offset, const void* buffer, size_t size) -> int {
    std::string& b = *memory_file_of(file).bytes;
    try {
      if (offset + size > b.size()) b.resize(static_cast<std::size_t>(offset + size));
    } catch (const std::bad_alloc&) {
      return SQFS_ERROR_ALLOC;
    }
    std::memcpy(b.data() + offset, buffer, size);
    return 0;
  };
  memory->file.get_size = [](const sqfs_file_t* file) -> sqfs_u64 { return memory_file_of(file).bytes->size(); };
  memory->file.truncate = [](sqfs_file_t* file, sqfs_u64 size) -> int {
    try {
      memory_file_of(file).bytes->resize(static_cast<std::size_t>(size));
    } catch (const std::bad_alloc&) {
      return SQFS_ERROR_ALLOC;
    }
    return 0;
  };
  return SqfsObject<sqfs_file_t>(&memory->file);
}

}  // namespace

SquashfsWriteResult write_squashfs(const Ext4Filesystem& root, const std::filesystem::path& output,
                                   const SquashfsWriteOptions& options) {
  PartialOutputFile partial(output);
  SquashfsWriteResult result;
  {
    SqfsObject<sqfs_file_t> file(sqfs_open_file(partial.path().c_str(), SQFS_FILE_OPEN_OVERWRITE));
    if (!file) throw_system_error("cannot create " + partial.path().string(), errno);
    SquashfsImageWriter writer(partial.path().string(), std::move(file), options,
                               superblock_time(root.status("/").mtime.seconds, options));
    walk_ext4_tree(root, options.selection, [&](const FilesystemTreeEntry& entry) { writer.add(entry); });
    result = writer.finish();
  }
  // Hashed before the rename, so the published name never holds a file whose hash is still unknown.
  result.sha256 = Sha256::of_file(partial.path()).hex();
  partial.commit();
  return result;
}

std::string squashfs_image(const std::vector<FilesystemTreeEntry>& entries, const SquashfsWriteOptions& options) {
  if (entries.empty() || entries.front().path != "/") throw Error("a squashfs image in memory: the entries must start with \"/\"");
  std::string bytes;
  {
    SquashfsImageWriter writer("a squashfs image in memory", open_memory_file(bytes), options,
                               superblock_time(entries.front().mtime.seconds, options));
    for (const auto& entry : entries) writer.add(entry);
    writer.finish();
  }
  return bytes;
}

}  // namespace aggrik8s
