#pragma once
// Proxmox VE's HTTP API, the part an ISO upload needs, as pure code: requests are values (built here,
// sent by deploy/proxmox/proxmox_client.hpp, printed by --dry-run), answers are parsed from their text.
//
//   GET  /api2/json/nodes/{node}/storage/{storage}/content?content=iso   -> {"data":[{"volid","size"},...]}
//   POST /api2/json/nodes/{node}/storage/{storage}/upload                -> {"data":"UPID:..."}
//        multipart/form-data: content=iso, checksum-algorithm, checksum, then the file part "filename"
//   GET  /api2/json/nodes/{node}/tasks/{upid}/status                     -> {"data":{"status","exitstatus"}}
//
// Authentication is an API token: "Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET". The secret
// is added to a request only by the client, at the moment it is sent; nothing here holds it, so no
// printed request and no message built here can carry it.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/proxmox_identifiers.hpp"

namespace aggrik8s::builder {

struct ProxmoxTarget {
  std::string api_base;  // proxmox_api_base_url()
  std::string node;      // the cluster node whose storage receives the files, e.g. pve1
  std::string storage;   // a storage with content type "iso", e.g. local
};

struct ProxmoxFormField {
  std::string name;
  std::string value;
};

struct ProxmoxFilePart {
  std::string field;      // "filename"
  std::string file_name;  // the name it gets on the storage
  std::filesystem::path path;
  std::uint64_t size = 0;
};

struct ProxmoxRequest {
  std::string method;  // GET | POST
  std::string url;
  std::string what;    // for messages: "upload of cp1.iso to local on pve1"
  std::vector<ProxmoxFormField> fields;  // multipart/form-data fields, in order, before the file
  std::optional<ProxmoxFilePart> file;
};

// An ISO to put on the storage; sha256 lets Proxmox verify what it received.
struct ProxmoxUploadFile {
  std::filesystem::path path;
  std::string file_name;
  std::uint64_t size = 0;
  std::string sha256;  // 64 hex digits
};

ProxmoxRequest storage_content_request(const ProxmoxTarget& target);
ProxmoxRequest iso_upload_request(const ProxmoxTarget& target, const ProxmoxUploadFile& file);
// The task's own node (from the UPID) is asked, as Proxmox' clients do: in a cluster a task runs on the
// node that received the upload.
ProxmoxRequest task_status_request(const ProxmoxTarget& target, const std::string& upid);

// "PVEAPIToken=" + token_id + "=": the Authorization value up to the secret.
std::string proxmox_authorization_prefix(const std::string& token_id);

// What --dry-run prints for a request: method and URL, headers (the token secret as <redacted>),
// form fields, and the file part with its local path and size.
std::string describe_request(const ProxmoxRequest& request, const std::string& token_id);

struct ProxmoxVolume {
  std::string volid;  // "local:iso/cp1.iso"
  std::uint64_t size = 0;
};

struct ProxmoxTaskStatus {
  bool stopped = false;
  std::string exitstatus;  // "OK" when it succeeded; set once stopped
};

// Answers of a 2xx status. They throw Error naming `what` when the JSON is not what Proxmox sends.
std::vector<ProxmoxVolume> parse_storage_content(const std::string& body, const std::string& what);
std::string parse_upload_task(const std::string& body, const std::string& what);
ProxmoxTaskStatus parse_task_status(const std::string& body, const std::string& what);

// "UPID:pve1:0012AB34:..." -> "pve1"; nullopt when it is not a UPID.
std::optional<std::string> upid_node(std::string_view upid);

// The volume `file_name` would become on `storage` ("local:iso/cp1.iso"), if the listing has it.
std::optional<ProxmoxVolume> find_iso_volume(const std::vector<ProxmoxVolume>& volumes, const std::string& storage,
                                             const std::string& file_name);

// A failed answer in words: "HTTP 400 Parameter verification failed. (filename: invalid format)".
// Proxmox puts its message in the status line's reason phrase, and in the body as "message" and
// "errors" (a map of parameter -> problem); all that are present are used.
std::string proxmox_error_text(long status, const std::string& reason, const std::string& body);

// `text` with every occurrence of `secret` replaced by <redacted>: the last guard on anything printed.
std::string redact_secret(std::string text, const std::string& secret);

// RFC 3986 percent-encoding of one path segment or query value (everything but unreserved characters).
std::string percent_encode(std::string_view text);

}  // namespace aggrik8s::builder
