#pragma once
// Edits of the Raspberry Pi boot partition's text files: cmdline.txt (one line of kernel arguments)
// and config.txt (firmware settings). Pure string transformations, so they are tested without images,
// and idempotent: building from an image we already built changes nothing twice.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/profile.hpp"

namespace aggrik8s::builder {

// Splits a cmdline into arguments (whitespace separated; the file must be one line).
std::vector<std::string> split_cmdline(std::string_view cmdline);
// Adds each argument unless the line already has it. An argument with '=' whose key is present with a
// different value is replaced in place (the kernel takes the last one, but two values confuse people).
// The result is one line ending in "\n". Arguments that must come later on the line to win (like
// cgroup_enable=memory against the device tree's cgroup_disable=memory) are appended at the end.
std::string add_cmdline_arguments(std::string_view cmdline, const std::vector<std::string>& arguments);
// Removes arguments whose key (the part before '=') is in `keys`.
std::string remove_cmdline_arguments(std::string_view cmdline, const std::vector<std::string>& keys);
// A Pi kernel keeps 2047 bytes of its command line (arm64 COMMAND_LINE_SIZE 2048) and silently drops the
// rest: the node's own arguments, last on the line, go first. Throws Error naming `what` when
// cmdline.txt alone is longer than that; returns a warning when it is longer than 1536 bytes, since
// the firmware puts arguments of its own in front of it (a few hundred bytes on a Pi 5).
std::optional<std::string> check_pi_cmdline_length(std::string_view cmdline, const std::string& what);
// The value of `root=PARTUUID=...`, if the root is given that way.
std::optional<std::string> cmdline_root_partuuid(std::string_view cmdline);

// Replaces (or appends) the block this tool manages at the end of config.txt, delimited by marker
// comments, with the settings for `boot`. Lines outside the block are kept byte for byte.
std::string apply_config_txt(std::string_view config_txt, const PiBootSettings& boot);
// The managed lines alone (for inspect and tests).
std::vector<std::string> managed_config_txt_lines(const PiBootSettings& boot);

}  // namespace aggrik8s::builder
