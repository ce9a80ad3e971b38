#pragma once
// Serialises writes to stderr between log lines and the progress bar: a log line first clears a bar
// that is on screen, prints, and lets the bar redraw below it.
#include <cstdio>
#include <functional>
#include <string>

namespace aggrik8s::terminal {

bool is_tty(std::FILE* stream);
// Columns of the terminal on stderr; 100 when unknown.
std::size_t width();
// Prints a whole line, clearing any status line that is on screen first.
void print_line(std::FILE* stream, const std::string& line);
// Replaces the status line (no newline) on a terminal; empty clears it.
void set_status(const std::string& status);

}  // namespace aggrik8s::terminal
