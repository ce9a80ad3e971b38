# e2e: `aggrik8s-image inspect --deep` on a freshly built Raspberry Pi 5 + RKE2 image: libguestfs boots
# its appliance on the image (read-only), fsck's both filesystems and re-reads every fact through the
# Linux kernel's FAT and ext4 drivers; everything must agree with the in-process readers. One appliance
# launch (~30-40 s under TCG; up to ~85 s with two other TCG guests busy on a 2-core machine). Every
# check names partitions through the libguestfs API: inside the appliance the image is sometimes the
# kernel's sdb (parallel disk probing), which made a debug-shell fsck of "/dev/sda1" fail under load.
source "$(dirname "$0")/lib.bash"
make_fixtures

printf 'K10deep-test-token::server:feedface\n' >"$WORK/token"
chmod 600 "$WORK/token"
cat >"$WORK/profile.yaml" <<YAML
kind: rpi5-rke2
name: deep
base: {path: $FIXTURES/firstrun/raspios-lite-arm64.img}
rke2:
  version: v1.33.1+rke2r1
  release_dir: $FIXTURES/rke2
  images: [rke2-images-core, rke2-images-canal]
  role: server
  token: {file: token}
  registries: {mirrors: {docker.io: {endpoint: ["https://registry.example:5000"]}}}
output: {root_free_space: 16MiB, bmap: false}
nodes:
  - name: deep1
YAML
expect_status 0 "build one node" -- "$CLI" build -q --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/profile.yaml"
IMG=$WORK/out/deep1.img
SHA_BEFORE=$(sha256sum "$IMG" | cut -d' ' -f1)

START=$(date +%s)
set +e
timeout 300 "$CLI" inspect --deep --json "$IMG" >"$WORK/deep.json" 2>"$WORK/deep.err"
STATUS=$?
set -e
ELAPSED=$(( $(date +%s) - START ))
[ "$STATUS" = 0 ] || { cat "$WORK/deep.err" "$WORK/deep.json" >&2; fail "inspect --deep exited $STATUS after ${ELAPSED}s"; }
pass "inspect --deep exits 0 (${ELAPSED}s)"

python3 - "$WORK/deep.json" <<'PY' || fail "deep check content"
import json, sys
report = json.load(open(sys.argv[1]))
deep = report["deep"]
bad = [c for c in deep["comparisons"] if not c["agree"]]
for c in bad:
    print("DISAGREE:", c["fact"], "| in-process:", c["in_process"], "| guestfs:", c["guestfs"], file=sys.stderr)
assert not bad, "in-process and libguestfs readings disagree"
facts = {c["fact"] for c in deep["comparisons"]}
for wanted in ["cmdline.txt", "/etc/rancher/rke2/config.yaml", "/etc/rancher/rke2/registries.yaml",
               "/etc/systemd/system/multi-user.target.wants/rke2-server.service",
               "/var/lib/rancher/rke2/agent/images", "partition 2 UUID"]:
    assert wanted in facts, "no comparison for " + wanted
config = next(c for c in deep["comparisons"] if c["fact"] == "/etc/rancher/rke2/config.yaml")
assert config["guestfs"] == "file 0600 0:0", config
unit = next(c for c in deep["comparisons"] if c["fact"].endswith("rke2-server.service"))
assert unit["guestfs"] == "-> /usr/local/lib/systemd/system/rke2-server.service", unit
assert len(deep["fsck"]) == 2 and all(f["clean"] for f in deep["fsck"]), deep["fsck"]
assert [f["exit_code"] for f in deep["fsck"]] == [0, 0], deep["fsck"]
assert deep["fsck"][1]["tool"].startswith("e2fsck -p, full check forced"), deep["fsck"]
assert report["warnings"] == [], report["warnings"]
print(len(deep["comparisons"]), "facts agree; fsck clean:", ", ".join(f["tool"] for f in deep["fsck"]))
PY
pass "every fact agrees with libguestfs; fsck clean on both filesystems; config.yaml 0600 root"

grep -q "K10deep-test-token" "$WORK/deep.json" "$WORK/deep.err" && fail "the token leaked into inspect's output"
pass "the token is not in the output"
[ "$(sha256sum "$IMG" | cut -d' ' -f1)" = "$SHA_BEFORE" ] || fail "inspect --deep changed the image"
pass "the image is unchanged"

echo "$CHECKS checks passed"
