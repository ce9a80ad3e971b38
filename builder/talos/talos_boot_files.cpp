#include "builder/talos/talos_boot_files.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include "builder/talos_kernel_args.hpp"
#include "core/error.hpp"

namespace aggrik8s::builder {
namespace {

std::string trim_left(const std::string& s) {
  std::size_t i = s.find_first_not_of(" \t");
  return i == std::string::npos ? "" : s.substr(i);
}

// GRUB expands $ and splits on blanks and ;|&<>; inside single quotes nothing is special.
std::string grub_word(const std::string& arg) {
  bool plain = std::all_of(arg.begin(), arg.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("._,:/=+@%-").find(c) != std::string_view::npos;
  });
  if (plain) return arg;
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// The words of a grub.cfg command as GRUB's parser reads them: blanks separate; inside '...' every
// character is literal; inside "..." and outside quotes a backslash escapes the next character; the
// quotes themselves are not part of the word. So `linux /boot/vmlinuz 'ip=[fd00::12]::...'` gives the
// kernel ip=[fd00::12]::..., and that is what is measured against its command-line limit, not the
// line as written (grub_word above adds the quotes back when the line is written).
std::vector<std::string> split_grub_words(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote == '\'') {
      if (c == '\'') quote = 0;
      else word += c;
      continue;
    }
    if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
      continue;
    }
    if (quote == '"') {
      if (c == '"') quote = 0;
      else word += c;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::string hex8(std::uint64_t value) {
  char buffer[9];
  std::snprintf(buffer, sizeof buffer, "%08llX", static_cast<unsigned long long>(value & 0xffffffffu));
  return buffer;
}

void pad4(std::string& out) {
  while (out.size() % 4 != 0) out.push_back('\0');
}

void cpio_entry(std::string& out, const std::string& name, std::uint32_t mode, const std::string& content,
                std::int64_t mtime, std::uint32_t inode) {
  out += "070701";
  out += hex8(inode);
  out += hex8(mode);
  out += hex8(0);  // uid
  out += hex8(0);  // gid
  out += hex8(1);  // nlink
  out += hex8(static_cast<std::uint64_t>(mtime));
  out += hex8(content.size());
  out += hex8(0);  // devmajor
  out += hex8(0);  // devminor
  out += hex8(0);  // rdevmajor
  out += hex8(0);  // rdevminor
  out += hex8(name.size() + 1);
  out += hex8(0);  // check
  out += name;
  out.push_back('\0');
  pad4(out);
  out += content;
  pad4(out);
}

}  // namespace

EditedGrubConfig edit_grub_config(const std::string& grub_cfg, const GrubConfigEdit& edit) {
  EditedGrubConfig result;
  std::istringstream in(grub_cfg);
  std::string line;
  bool saw_kernel = false;
  while (std::getline(in, line)) {
    std::string body = trim_left(line);
    std::string indent = line.substr(0, line.size() - body.size());
    if (body.starts_with("linux ") || body.starts_with("linuxefi ")) {
      std::vector<std::string> words = split_grub_words(body);
      if (words.size() >= 2 && words[1] == "/boot/vmlinuz") saw_kernel = true;
      std::string command = words.front();
      std::string kernel = words.size() > 1 ? words[1] : "";
      std::vector<std::string> args(words.size() > 2 ? words.begin() + 2 : words.end(), words.end());
      args = append_kernel_args(std::move(args), edit.add_args);
      std::string text = indent + command + " " + kernel;
      for (const auto& a : args) text += " " + grub_word(a);
      result.command_lines.push_back(join_kernel_args(args));
      line = text;
    } else if ((body.starts_with("initrd ") || body.starts_with("initrdefi ")) && !edit.append_initrds.empty()) {
      for (const auto& file : edit.append_initrds) line += " " + file;
    }
    result.text += line;
    result.text += '\n';
  }
  if (!saw_kernel) {
    throw Error("grub.cfg has no 'linux /boot/vmlinuz ...' line: this does not look like a Talos ISO");
  }
  return result;
}

std::string ipxe_script(const IpxeScriptInput& input) {
  std::string script = "#!ipxe\n";
  script += "# Talos node " + input.node + ", written by aggrik8s-image; files are relative to this script's URL.\n";
  // initrd= names the initrd for EFI kernels booted by ipxe.efi (measured-here.md: without it the
  // kernel finds no initramfs under OVMF).
  script += "kernel " + input.kernel_file + " " + join_kernel_args(input.kernel_args) + " initrd=" + input.initramfs_file + "\n";
  script += "initrd " + input.initramfs_file + "\n";
  script += "boot\n";
  return script;
}

std::string substitute_talos_url_variables(const std::string& url, const std::string& node,
                                           const std::optional<std::string>& uuid,
                                           const std::optional<std::string>& mac, const std::string& hostname) {
  std::string out;
  std::size_t i = 0;
  while (i < url.size()) {
    if (url.compare(i, 2, "${") != 0) {
      out += url[i++];
      continue;
    }
    std::size_t end = url.find('}', i);
    if (end == std::string::npos) throw Error(node + "/netboot_url: unterminated '${' in " + url);
    std::string name = url.substr(i + 2, end - i - 2);
    if (name == "uuid" && uuid) out += *uuid;
    else if (name == "mac" && mac) out += *mac;
    else if (name == "hostname") out += hostname;
    else if (name == "uuid" || name == "mac") {
      throw Error(node + "/" + name + ": netboot_url uses ${" + name + "}, so the node needs '" + name +
                  "' (iPXE would expand ${" + name + "} itself and has no escape for it)");
    } else {
      throw Error(node + "/netboot_url: ${" + name + "} cannot be passed through iPXE (it would expand it; there is no "
                  "escape); use ${uuid}, ${mac} or ${hostname}, which the build fills in per node");
    }
    i = end + 1;
  }
  return out;
}

std::string newc_cpio(const std::vector<CpioFile>& files, std::int64_t mtime) {
  std::string out;
  std::set<std::string> directories;
  std::uint32_t inode = 1;
  for (const auto& file : files) {
    for (std::size_t slash = file.path.find('/'); slash != std::string::npos; slash = file.path.find('/', slash + 1)) {
      std::string dir = file.path.substr(0, slash);
      if (directories.insert(dir).second) cpio_entry(out, dir, 040755, "", mtime, inode++);
    }
    cpio_entry(out, file.path, 0100000 | (file.mode & 07777), file.content, mtime, inode++);
  }
  cpio_entry(out, "TRAILER!!!", 0, "", 0, 0);
  // The kernel reads initramfs segments in 512-byte blocks, as cpio(1) pads its output.
  while (out.size() % 512 != 0) out.push_back('\0');
  return out;
}

}  // namespace aggrik8s::builder
