#include "netboot/http/http_request_target.hpp"

#include <cstdio>

#include <charconv>

namespace aggrik8s::netboot {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 3986 pchar minus '%' (handled by the decoder) plus '/' for whole paths.
bool allowed_in_path(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-': case '.': case '_': case '~': case '!': case '$': case '&': case '\'': case '(': case ')':
    case '*': case '+': case ',': case ';': case '=': case ':': case '@': case '/':
      return true;
    default:
      return false;
  }
}

bool allowed_in_query(char c) { return allowed_in_path(c) || c == '?'; }

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    int high = hex_value(text[i + 1]);
    int low = hex_value(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

std::string percent_encode_path(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '.' || c == '_' || c == '~' || c == '/';
    if (plain) {
      out.push_back(c);
    } else {
      auto byte = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 0xf]);
    }
  }
  return out;
}

std::optional<std::string> HttpRequestTarget::query_value(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::vector<std::string> HttpRequestTarget::segments() const {
  std::vector<std::string> out;
  std::size_t position = 1;
  while (position < path.size()) {
    std::size_t slash = path.find('/', position);
    if (slash == std::string::npos) slash = path.size();
    out.emplace_back(path.substr(position, slash - position));
    position = slash + 1;
  }
  return out;
}

std::string_view http_origin_form(std::string_view target) {
  auto scheme_is = [&](std::string_view scheme) {
    if (target.size() < scheme.size()) return false;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
      char c = target[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != scheme[i]) return false;
    }
    return true;
  };
  std::size_t authority = 0;
  if (scheme_is("http://")) authority = 7;
  else if (scheme_is("https://")) authority = 8;
  else return target;
  std::size_t path = target.find_first_of("/?#", authority);
  if (path == std::string_view::npos) return "/";  // "http://host": the root (RFC 9112 3.2.2)
  if (target[path] != '/') return {};  // "http://host?q": refused rather than guessed
  return target.substr(path);
}

std::string format_http_date(std::int64_t unix_seconds) {
  // IMF-fixdate (RFC 9110 5.6.7), written by hand: strftime's %a and %b follow the locale.
  static constexpr const char* days[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};  // 1970-01-01 was a Thursday
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::int64_t day_number = unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
  std::int64_t second_of_day = unix_seconds - day_number * 86400;
  // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
  std::int64_t z = day_number + 719468;
  std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  std::int64_t doe = z - era * 146097;
  std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  std::int64_t mp = (5 * doy + 2) / 153;
  std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
  std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
  std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  char text[40];
  std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                days[static_cast<std::size_t>(((day_number % 7) + 7) % 7)], static_cast<int>(day),
                months[static_cast<std::size_t>(month - 1)], static_cast<int>(year), static_cast<int>(second_of_day / 3600),
                static_cast<int>(second_of_day / 60 % 60), static_cast<int>(second_of_day % 60));
  return text;
}

bool http_if_range_allows_range(std::string_view if_range, std::string_view etag, std::string_view last_modified) {
  // RFC 9110 13.1.5: an entity-tag matches by strong comparison (a weak one, "W/...", never does); a
  // date matches only when it is exactly the representation's Last-Modified.
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  if_range = trim(if_range);
  if (if_range.empty()) return false;
  if (if_range.front() == '"') return !etag.empty() && if_range == etag;
  if (if_range.starts_with("W/")) return false;
  return !last_modified.empty() && if_range == last_modified;
}

std::optional<std::int64_t> parse_http_date(std::string_view text) {
  // "Sun, 06 Dec 2026 04:05:06 GMT": exactly 29 characters.
  static constexpr std::string_view months = "JanFebMarAprMayJunJulAugSepOctNovDec";
  if (text.size() != 29 || text.substr(3, 2) != ", " || text.substr(25) != " GMT") return std::nullopt;
  auto number = [&](std::size_t at, std::size_t digits) -> std::optional<int> {
    int value = 0;
    for (std::size_t i = at; i < at + digits; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  auto day = number(5, 2), year = number(12, 4), hour = number(17, 2), minute = number(20, 2), second = number(23, 2);
  std::size_t month_at = months.find(text.substr(8, 3));
  if (!day || !year || !hour || !minute || !second || month_at == std::string_view::npos || month_at % 3 != 0 ||
      text[7] != ' ' || text[11] != ' ' || text[16] != ' ' || text[19] != ':' || text[22] != ':' || *day < 1 ||
      *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  // Civil date to days since 1970-01-01 (Howard Hinnant's algorithm, the inverse of format_http_date's).
  std::int64_t y = *year, m = static_cast<std::int64_t>(month_at / 3) + 1;
  y -= m <= 2 ? 1 : 0;
  std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  std::int64_t yoe = y - era * 400;
  std::int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + *day - 1;
  std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  std::int64_t days = era * 146097 + doe - 719468;
  return days * 86400 + *hour * 3600 + *minute * 60 + *second;
}

namespace {

// Whether `etag` is in an If-Match / If-None-Match list ("*" matches any). Strong comparison: both
// strong and the same; weak: the same opaque tag, "W/" aside (RFC 9110 8.8.3.2).
bool etag_list_matches(std::string_view list, std::string_view etag, bool weak) {
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  if (trim(list) == "*") return true;
  if (etag.empty()) return false;
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    bool item_weak = item.starts_with("W/");
    if (item_weak) item.remove_prefix(2);
    if (item == etag && (weak || !item_weak)) return true;
  }
  return false;
}

}  // namespace

HttpPreconditionResult evaluate_http_preconditions(const HttpConditions& conditions, std::string_view etag,
                                                   std::int64_t modified) {
  if (!conditions.if_match.empty()) {
    if (!etag_list_matches(conditions.if_match, etag, false)) return HttpPreconditionResult::failed;
  } else if (auto since = parse_http_date(conditions.if_unmodified_since); since && modified > *since) {
    return HttpPreconditionResult::failed;
  }
  if (!conditions.if_none_match.empty()) {
    if (etag_list_matches(conditions.if_none_match, etag, true)) return HttpPreconditionResult::not_modified;
  } else if (auto since = parse_http_date(conditions.if_modified_since); since && modified <= *since) {
    return HttpPreconditionResult::not_modified;
  }
  return HttpPreconditionResult::proceed;
}

HttpRequestTarget parse_http_request_target(std::string_view target) {
  HttpRequestTarget result;
  if (target.size() > http_max_target_length) {
    result.refusal = "target longer than " + std::to_string(http_max_target_length) + " bytes";
    result.too_long = true;
    return result;
  }
  // RFC 9112 3.2.2: a server MUST accept the absolute-form ("http://host/path", what a client talking
  // to a proxy sends); the authority is not ours to check (a node may name us by any address), only
  // the path and query are used. The authority-form (CONNECT) and "*" (OPTIONS) never reach here.
  target = http_origin_form(target);
  if (target.empty() || target.front() != '/') {
    result.refusal = "target is not an absolute path";
    return result;
  }
  std::string_view raw_path = target;
  std::string_view raw_query;
  if (auto hash = raw_path.find('#'); hash != std::string_view::npos) {
    result.refusal = "target contains a fragment";
    return result;
  }
  if (auto question = target.find('?'); question != std::string_view::npos) {
    raw_path = target.substr(0, question);
    raw_query = target.substr(question + 1);
  }
  for (char c : raw_path) {
    if (c != '%' && !allowed_in_path(c)) {
      result.refusal = "path contains a character that must be percent-encoded";
      return result;
    }
  }
  for (char c : raw_query) {
    if (c != '%' && !allowed_in_query(c)) {
      result.refusal = "query contains a character that must be percent-encoded";
      return result;
    }
  }

  // Segment by segment, so an encoded '/' cannot create a segment boundary after decoding.
  std::string path;
  bool trailing_slash = raw_path.size() > 1 && raw_path.back() == '/';
  std::size_t position = 0;
  while (position <= raw_path.size()) {
    std::size_t slash = raw_path.find('/', position);
    if (slash == std::string_view::npos) slash = raw_path.size();
    std::string_view raw_segment = raw_path.substr(position, slash - position);
    position = slash + 1;
    auto segment = percent_decode(raw_segment);
    if (!segment) {
      result.refusal = "malformed percent-encoding in the path";
      return result;
    }
    if (segment->find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
      result.refusal = "path segment contains an encoded '/', '\\' or NUL";
      return result;
    }
    if (segment->empty() || *segment == ".") continue;
    if (*segment == "..") {
      result.refusal = "path contains a '..' segment";
      return result;
    }
    path += '/';
    path += *segment;
  }
  if (path.empty()) path = "/";
  if (trailing_slash && path != "/") path += '/';
  result.path = std::move(path);

  position = 0;
  while (!raw_query.empty() && position <= raw_query.size()) {
    std::size_t amp = raw_query.find('&', position);
    if (amp == std::string_view::npos) amp = raw_query.size();
    std::string_view pair = raw_query.substr(position, amp - position);
    position = amp + 1;
    if (pair.empty()) continue;
    std::size_t equals = pair.find('=');
    auto key = percent_decode(pair.substr(0, equals));
    auto value = percent_decode(equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1));
    if (!key || !value) {
      result.refusal = "malformed percent-encoding in the query";
      result.path.clear();
      return result;
    }
    result.query.emplace_back(std::move(*key), std::move(*value));
  }
  return result;
}

HttpRangeRequest parse_http_range(std::string_view header, std::uint64_t file_size) {
  HttpRangeRequest whole;
  header = trim(header);
  if (!header.starts_with("bytes=")) return whole;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return whole;
  std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return whole;
  std::string_view first_text = trim(spec.substr(0, dash));
  std::string_view last_text = trim(spec.substr(dash + 1));
  HttpRangeRequest result;
  result.kind = HttpRangeKind::partial;
  if (first_text.empty()) {
    auto suffix = parse_decimal(last_text);
    if (!suffix) return whole;
    if (*suffix == 0 || file_size == 0) return {HttpRangeKind::unsatisfiable, {}};
    std::uint64_t length = *suffix < file_size ? *suffix : file_size;
    result.range = {file_size - length, file_size - 1};
    return result;
  }
  auto first = parse_decimal(first_text);
  if (!first) return whole;
  std::optional<std::uint64_t> last;
  if (!last_text.empty()) {
    last = parse_decimal(last_text);
    if (!last || *last < *first) return whole;  // syntactically invalid: ignore the header
  }
  if (*first >= file_size) return {HttpRangeKind::unsatisfiable, {}};
  std::uint64_t end = last && *last < file_size - 1 ? *last : file_size - 1;
  result.range = {*first, end};
  return result;
}

}  // namespace aggrik8s::netboot
