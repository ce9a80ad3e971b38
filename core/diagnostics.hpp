#pragma once
// Errors found in user input, collected rather than thrown so one run reports every problem in a file
// ("file:line:col: message", the form editors and CI annotate).
#include <string>
#include <vector>

namespace aggrik8s {

struct SourceLocation {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based; 0 when unknown
  std::string str() const;
};

struct Diagnostic {
  enum class Severity { error, warning };
  Severity severity = Severity::error;
  SourceLocation where;
  std::string message;
  std::string str() const;
};

class Diagnostics {
 public:
  void error(const SourceLocation& where, std::string message);
  void warning(const SourceLocation& where, std::string message);
  bool has_errors() const;
  std::size_t error_count() const;
  const std::vector<Diagnostic>& all() const { return items_; }
  // all() without repeats of the same message at the same place (a base profile's error, met once per
  // site profile that extends it), in first-seen order: what a user reads. error_count() still counts
  // every report, as callers compare it before and after a step.
  std::vector<Diagnostic> distinct() const;
  std::size_t distinct_error_count() const;
  void append(const Diagnostics& other);
  // Throws Error listing every error (one per line) when there is at least one.
  void throw_if_errors(const std::string& context) const;

 private:
  std::vector<Diagnostic> items_;
};

}  // namespace aggrik8s
