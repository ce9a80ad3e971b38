#!/usr/bin/env python3
"""A loopback HTTPS server that answers like Proxmox VE's API for ISO uploads (tests/e2e/proxmox_upload.sh).

It implements what `aggrik8s-image upload` uses, with Proxmox' status lines and JSON bodies:
  GET  /api2/json/nodes/{node}/storage/{storage}/content?content=iso  -> {"data": [{"volid", "size", ...}]}
  POST /api2/json/nodes/{node}/storage/{storage}/upload              -> {"data": "UPID:..."}  (multipart)
  GET  /api2/json/nodes/{node}/tasks/{upid}/status                   -> {"data": {"status", "exitstatus"}}
Every request must carry "Authorization: PVEAPIToken=<token id>=<secret>" (else 401 "invalid token value!").
An unknown storage is "500 storage 'x' does not exist", like pvedaemon. Uploaded files are saved under
--storage-dir by their multipart file name; the task checks the sent sha256 against the bytes received,
reports "running" --running-polls times, then "stopped" with "OK" (or an error when the control file
<storage-dir>/../fail-next-task exists, which it removes). Each request is logged as one JSON line to
--log (never the Authorization value itself: only whether it was right).
"""
import argparse
import hashlib
import json
import os
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True, help="holds USER@REALM!ID=SECRET, the value after PVEAPIToken=")
    ap.add_argument("--node", default="pve1")
    ap.add_argument("--storage", default="local")
    ap.add_argument("--storage-dir", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--running-polls", type=int, default=2)
    args = ap.parse_args()
    with open(args.token_file) as f:
        expected_auth = "PVEAPIToken=" + f.read().strip()
    os.makedirs(args.storage_dir, exist_ok=True)
    control_dir = os.path.dirname(os.path.abspath(args.storage_dir))
    lock = threading.Lock()
    tasks = {}  # upid -> {"polls": n, "exitstatus": str}
    counter = [0]

    def log(entry):
        with lock, open(args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the JSON log is what tests read
            pass

        def answer(self, code, reason, payload):
            body = json.dumps(payload).encode()
            self.send_response(code, reason)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def fail(self, code, message):
            # pveproxy puts the message in the status line and (PVE >= 7) in the body.
            self.answer(code, message, {"data": None, "message": message + "\n"})

        def route(self, method):
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
            auth_ok = self.headers.get("Authorization", "") == expected_auth
            entry = {"method": method, "path": url.path, "query": url.query, "auth_ok": auth_ok,
                     "user_agent": self.headers.get("User-Agent", "")}
            body = b""
            if method == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not auth_ok:
                log(entry)
                return self.fail(401, "invalid token value!")
            # ['', 'api2', 'json', 'nodes', NODE, 'storage', STORAGE, 'content'|'upload']
            if len(parts) == 8 and parts[1:4] == ["api2", "json", "nodes"] and parts[5] == "storage":
                node, storage, action = parts[4], parts[6], parts[7]
                if node != args.node:
                    log(entry)
                    return self.fail(595, "no such node '%s'" % node)
                if storage != args.storage:
                    log(entry)
                    return self.fail(500, "storage '%s' does not exist" % storage)
                if action == "content" and method == "GET":
                    log(entry)
                    data = []
                    for name in sorted(os.listdir(args.storage_dir)):
                        p = os.path.join(args.storage_dir, name)
                        data.append({"volid": "%s:iso/%s" % (storage, name), "format": "iso", "content": "iso",
                                     "size": os.path.getsize(p), "ctime": int(os.path.getmtime(p))})
                    return self.answer(200, "OK", {"data": data})
                if action == "upload" and method == "POST":
                    return self.upload(entry, storage, body)
            if len(parts) == 8 and parts[1:4] == ["api2", "json", "nodes"] and parts[5] == "tasks" and parts[7] == "status":
                upid = parts[6]
                entry["upid"] = upid
                log(entry)
                with lock:
                    task = tasks.get(upid)
                    if task is None:
                        return self.fail(500, "unable to parse worker upid '%s'" % upid)
                    task["polls"] += 1
                    running = task["polls"] <= args.running_polls
                data = {"upid": upid, "node": args.node, "type": "imgcopy", "status": "running" if running else "stopped"}
                if not running:
                    data["exitstatus"] = task["exitstatus"]
                return self.answer(200, "OK", {"data": data})
            log(entry)
            return self.fail(501, "Method '%s %s' not implemented" % (method, url.path))

        def upload(self, entry, storage, body):
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
                log(entry)
                return self.fail(400, "Parameter verification failed.")
            boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
            fields, order, file_name, data = {}, [], None, None
            for part in body.split(b"--" + boundary)[1:]:
                if part.startswith(b"--"):
                    break
                head, _, content = part[2:].partition(b"\r\n\r\n")
                content = content[:-2] if content.endswith(b"\r\n") else content
                disposition = [h for h in head.decode().split("\r\n") if h.lower().startswith("content-disposition")][0]
                params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:])
                name = params["name"].strip('"')
                order.append(name)
                if "filename" in params:
                    file_name, data = params["filename"].strip('"'), content
                else:
                    fields[name] = content.decode()
            entry.update({"fields": fields, "order": order, "file_name": file_name,
                          "size": len(data) if data is not None else None,
                          "sha256": hashlib.sha256(data).hexdigest() if data is not None else None})
            log(entry)
            if fields.get("content") != "iso" or data is None:
                return self.answer(400, "Parameter verification failed.",
                                   {"data": None, "errors": {"content": "value must be iso here"}})
            if not file_name.endswith(".iso"):
                return self.answer(400, "Parameter verification failed.",
                                   {"data": None, "errors": {"filename": "wrong file extension"}})
            exitstatus = "OK"
            if fields.get("checksum-algorithm") == "sha256" and fields.get("checksum") != entry["sha256"]:
                exitstatus = "checksum mismatch: got '%s' instead of '%s'" % (entry["sha256"], fields.get("checksum"))
            fail_marker = os.path.join(control_dir, "fail-next-task")
            if os.path.exists(fail_marker):
                os.remove(fail_marker)
                exitstatus = "unable to move temporary file to storage: No space left on device"
            if exitstatus == "OK":
                tmp = os.path.join(args.storage_dir, "." + file_name + ".tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.rename(tmp, os.path.join(args.storage_dir, file_name))
            with lock:
                counter[0] += 1
                upid = "UPID:%s:%08X:%08X:%08X:imgcopy::builder@pve!images:" % (
                    args.node, os.getpid(), counter[0], int(time.time()))
                tasks[upid] = {"polls": 0, "exitstatus": exitstatus}
            return self.answer(200, "OK", {"data": upid})

        def do_GET(self):
            self.route("GET")

        def do_POST(self):
            self.route("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
