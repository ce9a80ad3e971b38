#include "core/diagnostics.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"

namespace aggrik8s {

std::string SourceLocation::str() const {
  std::string out = file;
  if (line > 0) {
    out += ":" + std::to_string(line);
    if (column > 0) out += ":" + std::to_string(column);
  }
  return out;
}

std::string Diagnostic::str() const {
  return where.str() + ": " + (severity == Severity::warning ? "warning: " : "") + message;
}

void Diagnostics::error(const SourceLocation& where, std::string message) {
  items_.push_back({Diagnostic::Severity::error, where, std::move(message)});
}
void Diagnostics::warning(const SourceLocation& where, std::string message) {
  items_.push_back({Diagnostic::Severity::warning, where, std::move(message)});
}
bool Diagnostics::has_errors() const { return error_count() > 0; }
std::size_t Diagnostics::error_count() const {
  return static_cast<std::size_t>(std::count_if(items_.begin(), items_.end(), [](const Diagnostic& d) {
    return d.severity == Diagnostic::Severity::error;
  }));
}
std::vector<Diagnostic> Diagnostics::distinct() const {
  std::vector<Diagnostic> out;
  std::set<std::string> seen;
  for (const auto& d : items_) {
    if (seen.insert(d.str()).second) out.push_back(d);
  }
  return out;
}
std::size_t Diagnostics::distinct_error_count() const {
  auto all = distinct();
  return static_cast<std::size_t>(std::count_if(all.begin(), all.end(), [](const Diagnostic& d) {
    return d.severity == Diagnostic::Severity::error;
  }));
}
void Diagnostics::append(const Diagnostics& other) {
  items_.insert(items_.end(), other.items_.begin(), other.items_.end());
}

void Diagnostics::throw_if_errors(const std::string& context) const {
  if (!has_errors()) return;
  std::string message = context + ": " + std::to_string(error_count()) + " error(s)";
  for (const auto& d : items_) {
    if (d.severity == Diagnostic::Severity::error) message += "\n  " + d.str();
  }
  throw Error(message);
}

}  // namespace aggrik8s
