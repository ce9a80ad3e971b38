# e2e: `aggrik8s-image export ansible` on the example site, read by Debian's ansible-core as
# rancherfederal/rke2-ansible would: ansible-inventory sees the site's RKE2 groups, hosts and host vars
# (and none of its Talos VMs); a local playbook beside the site finds every variable rke2-ansible reads
# and resolves the site's own token_lookup (relative to the playbook, as Ansible's file lookup is)
# without printing it. Profiles that disagree on the RKE2 version fail the export and write nothing.
source "$(dirname "$0")/lib.bash"
command -v ansible-inventory >/dev/null || fail "ansible-core is not installed: run scripts/setup"

# A copy of the example site and its profiles: the playbook sits beside it, so the site's
# token_lookup ('example-secrets/rke2-token') resolves as it would for a user's playbook.
SITE=$WORK/site
cp -r "$SRC/profiles" "$SITE"
cp -r "$SRC/overlays" "$WORK/overlays"  # the profiles' overlays (../../overlays from profiles/common)
TOKEN=$(cat "$SITE/example-secrets/rke2-token")
[ -n "$TOKEN" ] || fail "the example token file is empty"

# Ansible's state and temp files stay in the work directory: rootless, no ~/.ansible, no ansible.cfg.
mkdir -p "$WORK/ansible-home" "$WORK/ansible-tmp"
printf '[defaults]\n' >"$WORK/ansible.cfg"
export ANSIBLE_CONFIG=$WORK/ansible.cfg ANSIBLE_HOME=$WORK/ansible-home HOME=$WORK/ansible-home \
  ANSIBLE_LOCAL_TEMP=$WORK/ansible-tmp ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0

expect_status 0 "export ansible -o hosts.yml" -- "$CLI" export ansible "$SITE/site-lab.yaml" -o "$WORK/hosts.yml"
[ -s "$WORK/hosts.yml" ] || fail "hosts.yml not written"
ls -A "$WORK" | grep -vqE '^(site|overlays|ansible-home|ansible-tmp|ansible.cfg|hosts.yml|last.out)$' &&
  fail "export left other files: $(ls -A "$WORK")"
pass "nothing but hosts.yml written"
"$CLI" export ansible "$SITE/site-lab.yaml" >"$WORK/stdout.yml"
cmp -s "$WORK/hosts.yml" "$WORK/stdout.yml" || fail "stdout and -o differ"
pass "stdout equals -o FILE, byte for byte"
(cd "$WORK" && "$CLI" export ansible "$SITE/site-lab.yaml" -o - >"$WORK/dash.yml")
cmp -s "$WORK/hosts.yml" "$WORK/dash.yml" || fail "-o - did not write stdout"
[ -e "$WORK/-" ] && fail "-o - wrote a file named '-'"
pass "-o - is stdout"
# Through a symlink (an inventory linked into an rke2-ansible checkout): the link stays, its target is written.
mkdir -p "$WORK/checkout/inventory"
ln -s checkout/inventory/hosts.yml "$WORK/linked.yml"
"$CLI" export ansible "$SITE/site-lab.yaml" -o "$WORK/linked.yml" || fail "export -o through a symlink"
[ -L "$WORK/linked.yml" ] && cmp -s "$WORK/checkout/inventory/hosts.yml" "$WORK/hosts.yml" ||
  fail "-o SYMLINK replaced the link instead of writing its target"
pass "-o through a symlink writes its target and keeps the link"
expect_status 2 "export -o DIRECTORY is a usage error" -- "$CLI" export ansible "$SITE/site-lab.yaml" -o "$WORK/checkout"
expect_output "is a directory; give the file to write, e.g. .*checkout/hosts.yml" "... naming a file to give instead"
expect_status 2 "export -o '' is a usage error" -- "$CLI" export ansible "$SITE/site-lab.yaml" -o ""
rm "$WORK/stdout.yml" "$WORK/dash.yml"
grep -qF -- "$TOKEN" "$WORK/hosts.yml" && fail "the token's value is in the inventory"
pass "the token's value is not in the inventory"

expect_status 0 "ansible-inventory --list" -- ansible-inventory -i "$WORK/hosts.yml" --list --output "$WORK/list.json"
# The expected groups and host vars, straight from the site file (python3-yaml comes with ansible-core).
python3 - "$SITE/site-lab.yaml" "$WORK/list.json" <<'EOF' >"$WORK/last.out" 2>&1 || { cat "$WORK/last.out" >&2; fail "ansible-inventory's view differs from the site"; }
import json, sys, yaml
site = yaml.safe_load(open(sys.argv[1]))
listed = json.load(open(sys.argv[2]))
pis = [m for m in site["machines"] if m["platform"] == "rpi5"]
servers = [m["name"] for m in pis if m["role"] == "server"]
agents = [m["name"] for m in pis if m["role"] == "agent"]
assert listed["rke2_cluster"]["children"] == ["rke2_servers", "rke2_agents"], listed["rke2_cluster"]
assert listed["rke2_servers"]["hosts"] == servers, (listed["rke2_servers"], servers)
assert listed["rke2_agents"]["hosts"] == agents, (listed["rke2_agents"], agents)
hostvars = listed["_meta"]["hostvars"]
assert sorted(hostvars) == sorted(servers + agents), sorted(hostvars)
for m in pis:
    v = hostvars[m["name"]]
    address = m["address"].split("/")[0]
    assert v["ansible_host"] == address and v["node_ip"] == address, (m["name"], v)
    assert v["node_name"] == m["name"] and v["host_rke2_config"]["node-name"] == m["name"], (m["name"], v)
    assert v["aggrik8s_boot"] == m["boot"], (m["name"], v["aggrik8s_boot"])
    for key, value in (m.get("labels") or {}).items():
        assert f"{key}={value}" in v["node_labels"], (m["name"], key, v["node_labels"])
    for taint in m.get("taints") or []:
        assert taint in v["node_taints"], (m["name"], taint, v["node_taints"])
    assert v["rke2_install_version"].startswith("v") and "+rke2r" in v["rke2_install_version"], v
    assert v["rke2_token"] == site["ansible"]["token_lookup"], v["rke2_token"]
print("checked", len(pis), "hosts")
EOF
pass "ansible-inventory shows the site's RKE2 servers, agents and host vars, no Talos VM"

# What rke2-ansible v2 reads, merged as its roles/rke2/tasks/config.yml does; the token never printed.
cp "$SRC/tests/fixtures/rke2-ansible-check.yml" "$SITE/check-rke2-vars.yml"
expect_status 0 "local playbook against the inventory" -- \
  ansible-playbook -c local -i "$WORK/hosts.yml" "$SITE/check-rke2-vars.yml"
python3 - "$SITE/site-lab.yaml" "$WORK/last.out" <<'EOF' || fail "the playbook did not print every host's node_name/node_ip"
import sys, yaml
site = yaml.safe_load(open(sys.argv[1]))
out = open(sys.argv[2]).read()
for m in site["machines"]:
    line = f"node {m['name']} node_name={m['name']} node_ip={m['address'].split('/')[0]}"
    assert (line in out) == (m["platform"] == "rpi5"), line
EOF
pass "the playbook printed node_name/node_ip of each RKE2 host and of no VM"
expect_output 'cp1 +: ok=6 +changed=0 +unreachable=0 +failed=0' "every check ran on cp1"
grep -qF -- "$TOKEN" "$WORK/last.out" && fail "the playbook printed the token"
pass "the playbook did not print the token"

# The same playbook fails when a variable rke2-ansible reads is missing.
grep -v '^    rke2_install_version:' "$WORK/hosts.yml" >"$WORK/broken.yml"
expect_status 2 "the playbook fails without rke2_install_version" -- \
  ansible-playbook -c local -i "$WORK/broken.yml" "$SITE/check-rke2-vars.yml"
expect_output "rke2_install_version" "the failure names rke2_install_version"
rm "$WORK/broken.yml"

# Profiles that disagree on the RKE2 version: an error naming both, and no file written.
sed -i 's/^rke2:$/rke2:\n  version: v1.32.5+rke2r1/' "$SITE/rpi5-rke2-agent.yaml"
expect_status 1 "export with two RKE2 versions fails" -- \
  "$CLI" export ansible "$SITE/site-lab.yaml" -o "$WORK/versions.yml"
expect_output "disagree on rke2.version: cp1 \(profile rpi5-rke2-server.yaml\) has v1.33.1\+rke2r1, worker1 \(profile rpi5-rke2-agent.yaml\) has v1.32.5\+rke2r1" \
  "the error names both profiles and versions"
[ ! -e "$WORK/versions.yml" ] || fail "a failed export wrote its output"
ls "$WORK" | grep -q 'versions.yml' && fail "a failed export left a temp file: $(ls "$WORK")"
pass "a failed export writes nothing"

# A site of agents only (they join a server outside the site): rke2_servers is written empty, so
# ansible-inventory lists the group and rke2-ansible's groups['rke2_servers'] exists; export and
# validate warn that rke2-ansible still needs a server there.
cp "$SRC/profiles/rpi5-rke2-agent.yaml" "$SITE/"  # undo the version change above
cat >"$SITE/agents-only.yaml" <<'Y'
kind: site
name: agents
networks:
  pi-lan: {subnet: 10.0.10.0/24, gateway: 10.0.10.1, dns: [10.0.10.1]}
machines:
  - {name: w1, platform: rpi5, serial: a1b2c321, address: 10.0.10.21/24, role: agent, profile: rpi5-rke2-agent.yaml}
Y
expect_status 0 "export ansible of agents only" -- "$CLI" export ansible "$SITE/agents-only.yaml" -o "$WORK/agents.yml"
expect_output "agents-only.yaml:6:5: warning: the site has no RKE2 server: the inventory's rke2_servers group is empty" \
  "export warns that rke2-ansible needs a server"
expect_status 0 "validate of agents only" -- "$CLI" validate "$SITE/agents-only.yaml"
expect_output "warning: the site has no RKE2 server" "validate warns too"
expect_status 0 "ansible-inventory of agents only" -- ansible-inventory -i "$WORK/agents.yml" --list --output "$WORK/agents.json"
python3 - "$WORK/agents.json" <<'EOF' || fail "ansible-inventory does not list an empty rke2_servers group"
import json, sys
listed = json.load(open(sys.argv[1]))
assert listed["rke2_cluster"]["children"] == ["rke2_servers", "rke2_agents"], listed["rke2_cluster"]
assert listed["rke2_agents"]["hosts"] == ["w1"], listed["rke2_agents"]
EOF
pass "ansible-inventory lists rke2_servers (empty) and rke2_agents"
cat >"$WORK/servers-group.yml" <<'Y'
- hosts: rke2_cluster
  gather_facts: false
  tasks:
    - name: "rke2-ansible roles/rke2/tasks/main.yml: Set as server"
      ansible.builtin.set_fact: {service_name: rke2-server}
      when: ["inventory_hostname in groups['rke2_servers']"]
Y
expect_status 0 "rke2-ansible's 'Set as server' condition evaluates on the agents-only inventory" -- \
  ansible-playbook -c local -i "$WORK/agents.yml" "$WORK/servers-group.yml"

echo "$CHECKS passed, 0 failed"
