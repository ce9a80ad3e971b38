# e2e: `aggrik8s-image upload` (and `build --upload`) against a loopback HTTPS server that answers like
# the Proxmox VE API (tests/tools/proxmox_api_stub.py), with a CA and server certificate made here by
# openssl. Checks: --dry-run sends nothing and prints no secret; TLS fails without the CA, passes with
# proxmox.ca_file or a pinned fingerprint, fails with a wrong fingerprint; the multipart body carries
# the file's bytes (the server's copy is cmp'd), the Authorization header and form fields are right,
# the task is polled until it stops; files already present with the same size are skipped unless
# --force or the upload record says they changed; Proxmox errors (unknown storage, bad token, a failed task) become clear errors; `build
# --upload` of a bootable build puts the shared boot ISO and the per-node ISO there too; the token
# secret appears in no output and no file.
source "$(dirname "$0")/lib.bash"

# --- a CA and a server certificate for 127.0.0.1, as a Proxmox node has (pve-root-ca.pem + pve-ssl.pem)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=e2e Proxmox Virtual Environment CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=pve1.e2e" -keyout "$WORK/pve-ssl.key" -out "$WORK/pve-ssl.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/pve-ssl.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
  -extfile "$WORK/san.ext" -out "$WORK/pve-ssl.pem" 2>/dev/null
FINGERPRINT=$(openssl x509 -in "$WORK/pve-ssl.pem" -noout -fingerprint -sha256 | cut -d= -f2)
[ ${#FINGERPRINT} = 95 ] || fail "openssl gave no SHA-256 fingerprint: $FINGERPRINT"

# --- the token: its secret is a random UUID, in a 0600 file (with the newline `echo` leaves)
SECRET=$(python3 -c 'import uuid; print(uuid.uuid4())')
TOKEN_ID='builder@pve!images'
echo "$SECRET" >"$WORK/token-secret"
chmod 600 "$WORK/token-secret"
printf '%s=%s\n' "$TOKEN_ID" "$SECRET" >"$WORK/stub-token"  # the stub's copy, to check the header

STUB_DIR=$WORK/pve
mkdir -p "$STUB_DIR"
python3 "$SRC/tests/tools/proxmox_api_stub.py" --cert "$WORK/pve-ssl.pem" --key "$WORK/pve-ssl.key" \
  --token-file "$WORK/stub-token" --node pve1 --storage local --storage-dir "$STUB_DIR/iso" \
  --log "$STUB_DIR/requests.jsonl" --port-file "$STUB_DIR/port" --running-polls 2 >"$STUB_DIR/stub.log" 2>&1 &
STUB_PID=$!
trap 'kill "$STUB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$STUB_DIR/port" ] && break; sleep 0.1; done
[ -s "$STUB_DIR/port" ] || { cat "$STUB_DIR/stub.log" >&2; fail "the Proxmox API stub did not start"; }
PORT=$(cat "$STUB_DIR/port")
touch "$STUB_DIR/requests.jsonl"
requests() { wc -l <"$STUB_DIR/requests.jsonl"; }

# --- a talos-iso profile with config ISOs for two nodes (no input ISO needed)
echo kernel >"$WORK/vmlinuz"
echo initramfs >"$WORK/initramfs.xz"
cat >"$WORK/controlplane.yaml" <<'YAML'
version: v1alpha1
machine:
  type: controlplane
  token: e2e-SECRET-machine-token
  install:
    disk: /dev/sda
cluster:
  controlPlane:
    endpoint: https://10.0.20.10:6443
  clusterName: e2e
YAML
chmod 600 "$WORK/controlplane.yaml"
# write_profile FILE PROXMOX-EXTRA-LINES [STORAGE]
write_profile() {
  cat >"$1" <<YAML
kind: talos-iso
name: e2e-pve
talos:
  # Config ISOs alone read neither: the kernel + initramfs only satisfy the profile's rule.
  kernel: {path: vmlinuz}
  initramfs: {path: initramfs.xz}
  config: {file: controlplane.yaml}
  outputs: [config-iso]
nodes:
  - name: cp1
    install_disk: /dev/vda
  - name: cp2
proxmox:
  api_url: https://127.0.0.1:$PORT
  token_id: "$TOKEN_ID"
  token_secret: {file: token-secret}
  node: pve1
  storage: ${3:-local}
$2
YAML
}
write_profile "$WORK/with-ca.yaml" "  ca_file: ca.pem"
write_profile "$WORK/system-cas.yaml" ""
write_profile "$WORK/pinned.yaml" "  fingerprint: \"$FINGERPRINT\""
# The wrong pin differs from the server's in its first byte whatever that byte is (a fixed "00" was
# the right pin in 1 run of 256, and the upload it should refuse went through).
WRONG_PIN=$(printf '%02X%s' $(( (0x${FINGERPRINT:0:2} + 1) % 256 )) "${FINGERPRINT:2}")
[ "$WRONG_PIN" != "$FINGERPRINT" ] || fail "the wrong pin equals the right one"
write_profile "$WORK/wrong-pin.yaml" "  fingerprint: \"$WRONG_PIN\""
write_profile "$WORK/no-storage.yaml" "  ca_file: ca.pem" nope
# Every command's output is kept: the secret is looked for in all of it at the end.
run() { expect_status "$@"; cat "$WORK/last.out" >>"$WORK/all-output.log"; }

run 0 "upload --help" -- "$CLI" upload --help
expect_output "^Usage: aggrik8s-image upload \[OPTIONS\] PROFILE" "upload has a usage line"
expect_output "--dry-run +print the requests instead of sending them" "--dry-run documented"

export SOURCE_DATE_EPOCH=1767225600
run 0 "validate the profile with a proxmox section" -- "$CLI" validate "$WORK/with-ca.yaml"
OUT=$WORK/out
run 0 "build the config ISOs" -- "$CLI" build --out "$OUT" "$WORK/with-ca.yaml"
[ -f "$OUT/cp1-config.iso" ] && [ -f "$OUT/cp2-config.iso" ] || fail "config ISOs missing"

# --- dry run: the requests, no secret, nothing sent
run 0 "upload --dry-run" -- "$CLI" upload --dry-run --out "$OUT" "$WORK/with-ca.yaml"
expect_output "^GET https://127\.0\.0\.1:$PORT/api2/json/nodes/pve1/storage/local/content\?content=iso" "dry run: storage listing request"
expect_output "^POST https://127\.0\.0\.1:$PORT/api2/json/nodes/pve1/storage/local/upload" "dry run: upload request"
expect_output "Authorization: PVEAPIToken=builder@pve!images=<redacted>" "dry run: token id shown, secret redacted"
expect_output "form content=iso" "dry run: content field"
expect_output "form checksum=$(sha256sum "$OUT/cp1-config.iso" | cut -d' ' -f1)" "dry run: checksum field"
expect_output "form filename: file cp1-config\.iso \($(stat -c %s "$OUT/cp1-config.iso") bytes" "dry run: file name and size"
[ "$(requests)" = 0 ] || fail "--dry-run sent $(requests) requests"
pass "dry run sent nothing"

# --- TLS: the system CAs do not know our CA; a wrong pin is refused
run 1 "upload without the CA fails TLS verification" -- "$CLI" upload --out "$OUT" "$WORK/system-cas.yaml"
expect_output "not trusted: set proxmox\.ca_file" "the TLS error says what to do"
run 1 "upload with a wrong pinned fingerprint fails" -- "$CLI" upload --out "$OUT" "$WORK/wrong-pin.yaml"
expect_output "fingerprint ${FINGERPRINT}, not the pinned proxmox\.fingerprint" "the error names the server's fingerprint"
[ "$(requests)" = 0 ] || fail "a request got through an untrusted TLS connection"
pass "no request before TLS was verified"

# --- the upload
run 0 "upload with proxmox.ca_file" -- "$CLI" upload --out "$OUT" "$WORK/with-ca.yaml"
expect_output "^uploaded  local:iso/cp1-config\.iso$" "cp1's config ISO reported uploaded"
expect_output "^uploaded  local:iso/cp2-config\.iso$" "cp2's config ISO reported uploaded"
for n in cp1 cp2; do
  cmp "$OUT/$n-config.iso" "$STUB_DIR/iso/$n-config.iso" || fail "the server's copy of $n-config.iso differs"
done
pass "the server saved the same bytes (cmp)"
python3 - "$STUB_DIR/requests.jsonl" "$OUT" <<'PY' || fail "requests seen by the server"
import hashlib, json, os, sys, urllib.parse
log = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["auth_ok"] for r in log), "a request without the right Authorization header"
assert all(r["user_agent"].startswith("aggrik8s-image/") for r in log)
assert log[0]["method"] == "GET" and log[0]["path"].endswith("/storage/local/content") and log[0]["query"] == "content=iso", log[0]
posts = [r for r in log if r["method"] == "POST"]
assert [p["file_name"] for p in posts] == ["cp1-config.iso", "cp2-config.iso"], posts
for p in posts:
    assert p["order"] == ["content", "checksum-algorithm", "checksum", "filename"], p["order"]
    data = open(os.path.join(sys.argv[2], p["file_name"]), "rb").read()
    assert p["size"] == len(data) and p["sha256"] == hashlib.sha256(data).hexdigest()
    assert p["fields"]["checksum"] == p["sha256"] and p["fields"]["checksum-algorithm"] == "sha256"
polls = [r for r in log if r.get("upid")]
assert len(polls) == 6, "expected 3 status polls per task (2 running, 1 stopped), got %d" % len(polls)
assert all(urllib.parse.unquote(r["path"]) == "/api2/json/nodes/pve1/tasks/%s/status" % r["upid"] for r in polls), polls
assert len({r["upid"] for r in polls}) == 2, "one task per upload"
PY
pass "Authorization on every request, multipart fields in order, task polled until stopped"

# --- present with the same size: skipped; --force uploads again
before=$(requests)
run 0 "upload again: files already present" -- "$CLI" upload --out "$OUT" "$WORK/with-ca.yaml"
expect_output "^present   local:iso/cp1-config\.iso" "cp1's config ISO reported present"
expect_output "on local on pve1 as local:iso/cp2-config\.iso: was uploaded from here already \(the same sha256\); skipped" "the log says why it is skipped"
[ "$(grep -c '"POST"' "$STUB_DIR/requests.jsonl")" = 2 ] || fail "a present file was uploaded again"
[ "$(($(requests) - before))" = 1 ] || fail "expected only the listing request"
pass "nothing uploaded twice"
run 0 "upload --force --node cp1 with a pinned fingerprint (no CA)" -- \
  "$CLI" upload --force --node cp1 --out "$OUT" "$WORK/pinned.yaml"
expect_output "^uploaded  local:iso/cp1-config\.iso$" "forced upload of cp1's config ISO"
[ "$(grep -c '"POST"' "$STUB_DIR/requests.jsonl")" = 3 ] || fail "--force --node cp1 should upload one file"
pass "--force uploads again, --node limits it"

# verify_tls: false (warned about), with the secret from the environment this time
sed -e 's/token_secret: {file: token-secret}/token_secret: {env: E2E_PVE_TOKEN_SECRET}/' "$WORK/system-cas.yaml" >"$WORK/no-verify.yaml"
echo "  verify_tls: false" >>"$WORK/no-verify.yaml"
E2E_PVE_TOKEN_SECRET=$SECRET run 0 "upload with verify_tls: false and the secret in the environment" -- \
  "$CLI" upload --out "$OUT" "$WORK/no-verify.yaml"
expect_output "warning: proxmox.verify_tls is false: the API token goes to https://127.0.0.1:$PORT/api2/json without checking" "warned"
expect_output "^present   local:iso/cp2-config\.iso" "listed without verification"

# --- a rebuilt config ISO of the same size (they all are 68 KiB) but other bytes is uploaded again:
# the record of what went there from this output directory says it changed
sed 's|    install_disk: /dev/vda|    install_disk: /dev/vdb|' "$WORK/with-ca.yaml" >"$WORK/changed.yaml"
run 0 "rebuild with cp1's install disk changed" -- "$CLI" build --out "$OUT" "$WORK/changed.yaml"
[ "$(stat -c %s "$OUT/cp1-config.iso")" = "$(stat -c %s "$STUB_DIR/iso/cp1-config.iso")" ] || fail "expected the same size"
cmp -s "$OUT/cp1-config.iso" "$STUB_DIR/iso/cp1-config.iso" && fail "expected other bytes"
run 0 "upload after the rebuild" -- "$CLI" upload --out "$OUT" "$WORK/changed.yaml"
expect_output "cp1-config\.iso: local:iso/cp1-config\.iso exists with the same size, but this file changed since it was uploaded; replacing it" \
  "a changed file of the same size is replaced"
expect_output "^present   local:iso/cp2-config\.iso" "the unchanged one is not"
cmp "$OUT/cp1-config.iso" "$STUB_DIR/iso/cp1-config.iso" || fail "the storage still has the old cp1-config.iso"
grep -q '"volid": "local:iso/cp1-config.iso"' "$OUT/proxmox-uploads.json" || fail "no upload record"
pass "the storage has the rebuilt cp1-config.iso"

# --- Proxmox errors
run 1 "unknown storage" -- "$CLI" upload --out "$OUT" "$WORK/no-storage.yaml"
expect_output "listing of storage nope on pve1 \(GET https://127\.0\.0\.1:$PORT/api2/json/nodes/pve1/storage/nope/content\?content=iso\) was refused: HTTP 500 storage 'nope' does not exist" \
  "the error names the request, the status and Proxmox' message"
echo "wrong-$SECRET" >"$WORK/token-secret.wrong"
chmod 600 "$WORK/token-secret.wrong"
sed 's/token-secret}/token-secret.wrong}/' "$WORK/with-ca.yaml" >"$WORK/bad-token.yaml"
run 1 "a wrong token secret" -- "$CLI" upload --out "$OUT" "$WORK/bad-token.yaml"
expect_output "HTTP 401 invalid token value!; check proxmox.token_id and the token secret" "401 explained"
touch "$STUB_DIR/fail-next-task"
run 1 "a task that fails" -- "$CLI" upload --force --node cp2 --out "$OUT" "$WORK/with-ca.yaml"
expect_output "upload of cp2-config\.iso to storage local on pve1: Proxmox task UPID:pve1:[0-9A-F:]+imgcopy::builder@pve!images: failed: unable to move temporary file to storage: No space left on device" \
  "a non-OK exit status is an error naming the task"

# --- build --upload into a fresh directory: the storage has files of these names that this directory
# did not upload (as another cluster's node cp1 would, or a build from a directory since removed):
# nothing is replaced without --force-upload, whatever the sizes say (every config ISO is 68 KiB)
posts_before=$(grep -c '"POST"' "$STUB_DIR/requests.jsonl")
run 1 "build --upload into a fresh directory" -- "$CLI" build --upload --out "$WORK/out2" "$WORK/with-ca.yaml"
expect_output "local:iso/cp1-config\.iso \(for cp1-config\.iso\) is already there, and this output directory did not upload it" \
  "the conflict names the volume and why"
expect_output "Nothing was replaced\. \`upload --force\` \(\`build --upload --force-upload\`\) replaces them" "and what to do"
[ "$(grep -c '"POST"' "$STUB_DIR/requests.jsonl")" = "$posts_before" ] || fail "a conflicting file was uploaded"
pass "nothing uploaded on a conflict"
expect_status 2 "--force-upload without --upload" -- "$CLI" build --force-upload --out "$WORK/out2" "$WORK/with-ca.yaml"
run 0 "build --upload --force-upload" -- "$CLI" build --upload --force-upload --out "$WORK/out2" "$WORK/with-ca.yaml"
expect_output "^uploaded  local:iso/cp1-config\.iso$" "--force-upload replaces cp1's config ISO"
cmp "$WORK/out2/cp2-config.iso" "$STUB_DIR/iso/cp2-config.iso" || fail "the storage does not hold out2's cp2-config.iso"
run 0 "build --upload again into that directory" -- "$CLI" build --upload --out "$WORK/out2" "$WORK/with-ca.yaml"
expect_output "^present   local:iso/cp1-config\.iso  \(uploaded from here already\)$" "then it is present"
sed '/^proxmox:/,$d' "$WORK/with-ca.yaml" >"$WORK/no-proxmox.yaml"
run 2 "build --upload without a proxmox section" -- "$CLI" build --upload --out "$WORK/out3" "$WORK/no-proxmox.yaml"
expect_output "--upload needs a talos-iso profile with a 'proxmox' section" "refused with a reason"
[ ! -e "$WORK/out3" ] || fail "build --upload built before refusing"
pass "refused before any work"

# --- a bootable build: the shared boot ISO and a per-node ISO (the stand-in Talos ISO, ~45 MB, made
# once per build tree and shared with talos_iso_qemu.sh: same directory, lock and generator stamp)
make_talos_fixture
sed -e "s|  kernel: {path: vmlinuz}|  iso: {path: $TALOS_FIXTURE/metal-amd64.iso}|" -e '/initramfs: {path/d' \
  -e 's/outputs: \[config-iso\]/outputs: [config-iso, iso]/' -e 's/^name: e2e-pve/name: e2e-pve-iso/' \
  "$WORK/with-ca.yaml" >"$WORK/iso.yaml"
# Another profile (e2e-pve-iso) whose node is also named cp1: its cp1-config.iso clashes with e2e-pve's.
run 1 "another profile's cp1 is refused" -- "$CLI" build --upload --node cp1 --cache-dir "$WORK/cache" --out "$WORK/out-iso" "$WORK/iso.yaml"
expect_output "local:iso/cp1-config\.iso \(for cp1-config\.iso\) is already there" "the clash is named"
[ ! -e "$STUB_DIR/iso/cp1.iso" ] && [ ! -e "$STUB_DIR/iso/talos-metal-iso.iso" ] || fail "files were uploaded before the clash stopped the run"
pass "nothing uploaded before the clash was found"
run 0 "build --upload --force-upload --node cp1 with the iso output" -- "$CLI" build --upload --force-upload --node cp1 --cache-dir "$WORK/cache" --out "$WORK/out-iso" "$WORK/iso.yaml"
for f in talos-metal-iso.iso cp1.iso; do
  expect_output "^uploaded  local:iso/$f$" "$f uploaded"
  cmp "$WORK/out-iso/$f" "$STUB_DIR/iso/$f" || fail "the server's copy of $f differs"
done
[ ! -e "$STUB_DIR/iso/cp2.iso" ] || fail "--node cp1 uploaded cp2.iso"
pass "the shared boot ISO and cp1.iso arrived byte for byte (cmp)"

# --- the secret: in no output, no file written, no manifest (only the token file and the stub's copy)
leaks=$(grep -rlF -- "$SECRET" "$WORK" | grep -vxF -e "$WORK/token-secret" -e "$WORK/token-secret.wrong" -e "$WORK/stub-token" || true)
[ -z "$leaks" ] || fail "the token secret appears in: $leaks"
grep -qF -- "$SECRET" "$WORK/all-output.log" && fail "the token secret is in the output"
pass "the token secret is in no output and no file"
echo "proxmox_upload: $CHECKS checks passed"
