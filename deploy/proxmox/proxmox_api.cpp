#include "deploy/proxmox/proxmox_api.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/byte_size.hpp"
#include "core/error.hpp"

namespace aggrik8s::builder {

namespace {

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
