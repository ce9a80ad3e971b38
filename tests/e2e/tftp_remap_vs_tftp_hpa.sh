#!/usr/bin/env bash
# One remap file, one root, two servers: tftp-hpa's own in.tftpd (-m FILE) and the real
# `aggrik8s-image serve` (tftp.remap). tftp-hpa's client asks both for the same names; every answer
# (the file's bytes, or the error line) must be the same. The rules use what the two regex engines
# could disagree on: POSIX sub-match rules, GNU escapes and word anchors, glibc's {,n}, bracket
# expressions with ']' and classes, case-insensitive ranges, \L and \0 in replacements, g and e.
source "$(dirname "$0")/lib.bash"

umask 022  # tftp-hpa serves world-readable files only
mkdir -p "$WORK/root/boot" "$WORK/root/rpi"
cat >"$WORK/tftpd.remap" <<'MAP'
# tftp-hpa's Windows example
rg  \\                  /
r   ^/
ri  ^boot/(.*)          boot/\L\1
# Pi serial directories
re  ^[0-9a-f]{8}/(.*)$  rpi/\1
# POSIX: each sub-expression as long as it can be, left to right
re  ^(wee|week)(knights|night)$  \1-\2
re  my\ file\#1         escaped
r   ^\w+\s
rg  \<old\>             new
re  ^x{,3}$             at-most-three
re  []a]+               B
re  [[:digit:]]+        N
rie ^[a-f]+$            hex
a   secret              Forbidden\ \0
a   ^deny$
MAP
for name in boot/bcd rpi/config.txt wee-knights escaped "new bold new" at-most-three xxxx zBz Bbc pxeN.cfg hex probe.txt; do
  echo "contents of $name" >"$WORK/root/$name"
done

cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 127.0.0.1}
tftp: {port: 0, root: root, remap: tftpd.remap}
http: {port: 0, root: root}
YAML
HPA_PORT=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# -u root: the work directory need not be searchable by nobody; -s: names are relative to the root.
in.tftpd -L -u root -s "$WORK/root" -m "$WORK/tftpd.remap" -a "127.0.0.1:$HPA_PORT" 2>"$WORK/in.tftpd.log" &
HPA_PID=$!
SERVE_PID=
trap 'kill "$HPA_PID" 2>/dev/null || true; [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true' EXIT
start_serve --config "$WORK/netboot.yaml"

# What tftp-hpa's client reports for NAME from the server on PORT: the bytes received, or its error.
answer() {  # answer PORT NAME
  rm -f "$WORK/got"
  local said
  said=$(cd "$WORK" && timeout 30 tftp -m binary 127.0.0.1 "$1" -c get "$2" got 2>&1) || true
  if [ -s "$WORK/got" ] && [ -z "$said" ]; then cat "$WORK/got"; else echo "$said"; fi
}

for _ in $(seq 100); do [ "$(answer "$HPA_PORT" probe.txt)" = "contents of probe.txt" ] && break; sleep 0.1; done
[ "$(answer "$HPA_PORT" probe.txt)" = "contents of probe.txt" ] || { cat "$WORK/in.tftpd.log" >&2; fail "in.tftpd did not answer"; }
pass "in.tftpd (port $HPA_PORT) and serve (port $TFTP_PORT) both answer"

while IFS='|' read -r name expected; do
  from_hpa=$(answer "$HPA_PORT" "$name")
  from_serve=$(answer "$TFTP_PORT" "$name")
  [ "$from_hpa" = "$expected" ] || fail "in.tftpd answered '$name' with '$from_hpa', the test expects '$expected'"
  [ "$from_serve" = "$from_hpa" ] || { cat "$WORK/serve.log" >&2; fail "'$name': serve answered '$from_serve', in.tftpd '$from_hpa'"; }
  pass "'$name': $from_serve"
done <<'NAMES'
\Boot\BCD|contents of boot/bcd
9ffefdef/config.txt|contents of rpi/config.txt
weeknights|contents of wee-knights
my file#1|contents of escaped
word_1 old bold old|contents of new bold new
xxx|contents of at-most-three
xxxx|contents of xxxx
z]a]z|contents of zBz
abc|contents of Bbc
pxe42.cfg|contents of pxeN.cfg
ABCDEF|contents of hex
NAMES

# Refusals: compared between the two servers only, since the client prints the server's own words.
for name in top/secret.txt deny not-there; do
  from_hpa=$(answer "$HPA_PORT" "$name")
  from_serve=$(answer "$TFTP_PORT" "$name")
  [ "$from_serve" = "$from_hpa" ] || fail "'$name': serve answered '$from_serve', in.tftpd '$from_hpa'"
  pass "'$name' refused alike: $from_serve"
done
echo "$CHECKS checks passed"
