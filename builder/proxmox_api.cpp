#include "builder/proxmox_api.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/byte_size.hpp"
#include "core/error.hpp"

namespace aggrik8s::builder {

namespace {

constexpr std::string_view api_path = "/api2/json";
constexpr const char* redacted = "<redacted>";

nlohmann::json parse_json(const std::string& body, const std::string& what) {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception&) {
    throw Error(what + ": the answer is not JSON (is api_url a Proxmox VE API?)");
  }
}

const nlohmann::json& data_of(const nlohmann::json& answer, const std::string& what) {
  if (!answer.is_object() || !answer.contains("data")) throw Error(what + ": the answer has no \"data\"");
  return answer["data"];
}

std::string storage_path(const ProxmoxTarget& target) {
  return target.api_base + "/nodes/" + percent_encode(target.node) + "/storage/" + percent_encode(target.storage);
}

}  // namespace

std::optional<std::string> proxmox_api_base_url(std::string_view url, std::string* why) {
  auto fail = [&](const std::string& message) -> std::optional<std::string> {
    if (why != nullptr) *why = message;
    return std::nullopt;
  };
  constexpr std::string_view scheme = "https://";
  if (!url.starts_with(scheme)) return fail("must be an https:// URL (the token travels with every request)");
  std::string_view rest = url.substr(scheme.size());
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.empty() || authority.find_first_of("@?#") != std::string_view::npos) {
    return fail("must be https://HOST:PORT (no user, query or fragment)");
  }
  while (path.ends_with('/')) path.remove_suffix(1);
  if (!path.empty() && path != api_path) return fail("may have no path but /api2/json");
  return std::string(scheme) + std::string(authority) + std::string(api_path);
}

bool is_proxmox_token_id(std::string_view token_id) {
  std::size_t at = token_id.find('@');
  std::size_t bang = token_id.find('!');
  if (at == std::string_view::npos || bang == std::string_view::npos || at == 0 || bang < at + 2 ||
      bang + 1 >= token_id.size()) {
    return false;
  }
  // No character that would end the header value or the "USER@REALM!TOKENID=SECRET" form.
  return std::none_of(token_id.begin(), token_id.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c <= ' ' || c == '=' || c == 0x7f;
  });
}

bool is_proxmox_storage_id(std::string_view storage) {
  auto alnum = [](unsigned char c) { return std::isalnum(c) != 0; };
  if (storage.empty() || !std::isalpha(static_cast<unsigned char>(storage.front())) ||
      !alnum(static_cast<unsigned char>(storage.back()))) {
    return false;
  }
  return std::all_of(storage.begin(), storage.end(), [&](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return alnum(c) || c == '-' || c == '_' || c == '.';
  });
}

bool is_proxmox_node_name(std::string_view node) {
  if (node.empty() || node.front() == '-' || node.back() == '-') return false;
  return std::all_of(node.begin(), node.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-'; });
}

std::optional<std::string> normalize_certificate_fingerprint(std::string_view text) {
  std::string hex;
  for (char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 64) return std::nullopt;
  return hex;
}

ProxmoxRequest storage_content_request(const ProxmoxTarget& target) {
  return {"GET", storage_path(target) + "/content?content=iso",
          "listing of storage " + target.storage + " on " + target.node, {}, std::nullopt};
}

ProxmoxRequest iso_upload_request(const ProxmoxTarget& target, const ProxmoxUploadFile& file) {
  ProxmoxRequest request{"POST", storage_path(target) + "/upload",
                         "upload of " + file.file_name + " to storage " + target.storage + " on " + target.node,
                         {{"content", "iso"}},
                         ProxmoxFilePart{"filename", file.file_name, file.path, file.size}};
  if (!file.sha256.empty()) {
    request.fields.push_back({"checksum-algorithm", "sha256"});
    request.fields.push_back({"checksum", file.sha256});
  }
  return request;
}

ProxmoxRequest task_status_request(const ProxmoxTarget& target, const std::string& upid) {
  std::string node = upid_node(upid).value_or(target.node);
  return {"GET", target.api_base + "/nodes/" + percent_encode(node) + "/tasks/" + percent_encode(upid) + "/status",
          "status of task " + upid, {}, std::nullopt};
}

std::string proxmox_authorization_prefix(const std::string& token_id) { return "PVEAPIToken=" + token_id + "="; }

std::string describe_request(const ProxmoxRequest& request, const std::string& token_id) {
  std::string text = request.method + " " + request.url + "\n";
  text += "  Authorization: " + proxmox_authorization_prefix(token_id) + redacted + "\n";
  if (request.method == "POST") text += "  Content-Type: multipart/form-data\n";
  for (const auto& field : request.fields) text += "  form " + field.name + "=" + field.value + "\n";
  if (request.file) {
    text += "  form " + request.file->field + ": file " + request.file->file_name + " (" +
            std::to_string(request.file->size) + " bytes, " + format_byte_size(request.file->size) + ", from " +
            request.file->path.string() + ")\n";
  }
  return text;
}

std::vector<ProxmoxVolume> parse_storage_content(const std::string& body, const std::string& what) {
  nlohmann::json answer = parse_json(body, what);
  const nlohmann::json& data = data_of(answer, what);
  if (!data.is_array()) throw Error(what + ": \"data\" is not a list");
  std::vector<ProxmoxVolume> volumes;
  for (const auto& item : data) {
    if (!item.is_object() || !item.contains("volid") || !item["volid"].is_string()) {
      throw Error(what + ": a storage entry has no \"volid\"");
    }
    ProxmoxVolume volume;
    volume.volid = item["volid"].get<std::string>();
    if (item.contains("size") && item["size"].is_number_unsigned()) volume.size = item["size"].get<std::uint64_t>();
    volumes.push_back(std::move(volume));
  }
  return volumes;
}

std::string parse_upload_task(const std::string& body, const std::string& what) {
  nlohmann::json answer = parse_json(body, what);
  const nlohmann::json& data = data_of(answer, what);
  if (!data.is_string() || !data.get<std::string>().starts_with("UPID:")) {
    throw Error(what + ": the answer's \"data\" is not a task id (UPID:...)");
  }
  return data.get<std::string>();
}

ProxmoxTaskStatus parse_task_status(const std::string& body, const std::string& what) {
  nlohmann::json answer = parse_json(body, what);
  const nlohmann::json& data = data_of(answer, what);
  if (!data.is_object() || !data.contains("status") || !data["status"].is_string()) {
    throw Error(what + ": the answer has no \"data.status\"");
  }
  ProxmoxTaskStatus status;
  status.stopped = data["status"].get<std::string>() == "stopped";
  if (status.stopped) {
    // A stopped task without an exit status did not say it succeeded.
    status.exitstatus = data.contains("exitstatus") && data["exitstatus"].is_string()
                            ? data["exitstatus"].get<std::string>()
                            : "no exit status";
  }
  return status;
}

std::optional<std::string> upid_node(std::string_view upid) {
  if (!upid.starts_with("UPID:")) return std::nullopt;
  std::string_view rest = upid.substr(5);
  std::size_t colon = rest.find(':');
  if (colon == 0 || colon == std::string_view::npos) return std::nullopt;
  return std::string(rest.substr(0, colon));
}

std::optional<ProxmoxVolume> find_iso_volume(const std::vector<ProxmoxVolume>& volumes, const std::string& storage,
                                             const std::string& file_name) {
  std::string volid = storage + ":iso/" + file_name;
  for (const auto& v : volumes) {
    if (v.volid == volid) return v;
  }
  return std::nullopt;
}

std::string proxmox_error_text(long status, const std::string& reason, const std::string& body) {
  std::string text = "HTTP " + std::to_string(status);
  std::string trimmed = reason;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) trimmed.pop_back();
  if (!trimmed.empty()) text += " " + trimmed;
  std::vector<std::string> details;
  try {
    nlohmann::json answer = nlohmann::json::parse(body);
    if (answer.is_object() && answer.contains("message") && answer["message"].is_string()) {
      std::string message = answer["message"].get<std::string>();
      while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
      if (!message.empty() && message != trimmed) details.push_back(message);
    }
    if (answer.is_object() && answer.contains("errors") && answer["errors"].is_object()) {
      for (const auto& [field, problem] : answer["errors"].items()) {
        std::string p = problem.is_string() ? problem.get<std::string>() : problem.dump();
        while (!p.empty() && std::isspace(static_cast<unsigned char>(p.back()))) p.pop_back();
        details.push_back(field + ": " + p);
      }
    }
  } catch (const nlohmann::json::exception&) {
    // Not JSON (a proxy's error page): the status line says what there is to say.
  }
  if (!details.empty()) {
    text += " (";
    for (std::size_t i = 0; i < details.size(); ++i) text += (i > 0 ? "; " : "") + details[i];
    text += ")";
  }
  return text;
}

std::string redact_secret(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
    text.replace(at, secret.size(), redacted);
    at += std::string_view(redacted).size();
  }
  return text;
}

std::string percent_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
    }
  }
  return out;
}

}  // namespace aggrik8s::builder
