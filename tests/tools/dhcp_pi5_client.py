#!/usr/bin/env python3
"""A scripted Raspberry Pi 5 EEPROM bootloader. DHCP: DISCOVER with the Pi's vendor class, arch 0 and
option 97 = RPi5 + board revision + MAC low bytes + serial, then REQUEST/ACK. With --tftp DIR it goes
on as the bootloader does: puts the leased address on the interface and, from it, fetches over TFTP
from siaddr (RRQ options tsize 0, blksize 1468) `<serial>/config.txt`, probes the kernel (first block,
then ERROR "Early terminate", checking that the server sends nothing more), then `cmdline.txt`, the
DTB, the kernel config.txt names (kernel=, default kernel_2712.img) and, with auto_initramfs=1, its
initramfs (initramfs8 / initramfs_2712) into DIR. Prints the OFFER,
the ACK and the TFTP results as JSON. Runs inside a test network namespace (broadcast to
255.255.255.255:67 from port 68 on eth0).
With --http-boot HOST:PORT/PATH --public-key PEM OUTDIR it boots as in mode 7 (HTTP boot) instead:
puts the leased address on the interface and, from it (the socket is bound to it, so a server sees the
node's address), GETs http://HOST:PORT/PATH/boot.sig, then boot.img, into OUTDIR, and checks them as
the bootloader does: boot.sig's three lines (sha256 hex, "ts: N", "rsa2048: " + 512 hex digits), the
sha256 of boot.img against the first, and the RSA-2048 PKCS#1 v1.5 SHA-256 signature against the
public key (the one rpi-eeprom-config -p puts into the EEPROM). Prints sizes, times, rates and the
verdict under "http"; exits 1 naming the reason when a download or the verification fails.
usage: dhcp_pi5_client.py MAC SERIAL_HEX [TIMEOUT_S] [--tftp DIR]
       dhcp_pi5_client.py MAC SERIAL_HEX [TIMEOUT_S] --http-boot HOST:PORT/PATH --public-key PEM OUTDIR"""
import hashlib, http.client, json, os, re, socket, struct, subprocess, sys, time
from dhcp_wire import dhcp_options

args = [a for a in sys.argv[1:]]
tftp_dir = None
if "--tftp" in args:
    at = args.index("--tftp")
    tftp_dir = args[at + 1]
    del args[at:at + 2]
http_boot = public_key_file = http_out_dir = None
if "--http-boot" in args:
    at = args.index("--http-boot")
    http_boot = args[at + 1]
    del args[at:at + 2]
    if "--public-key" not in args:
        raise SystemExit("--http-boot needs --public-key PEM OUTDIR")
    at = args.index("--public-key")
    public_key_file = args[at + 1]
    del args[at:at + 2]
    if len(args) < 3:
        raise SystemExit("--http-boot needs OUTDIR (after MAC SERIAL_HEX [TIMEOUT_S])")
    http_out_dir = args.pop()
mac = bytes.fromhex(args[0].replace(":", ""))
serial = bytes.fromhex(args[1])
timeout = float(args[2]) if len(args) > 2 else 5
xid = int.from_bytes(os.urandom(4), "big")

def packet(msg_type, extra=b""):
    head = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, xid, 0, 0x8000, 0, 0, 0, 0) + mac + bytes(10) + bytes(192)
    opt97 = b"RPi5" + bytes([0, 0xd0, 0x40, 0x17]) + mac[2:] + serial
    vendor = b"PXEClient:Arch:00000:UNDI:002001"
    opts = bytes([53, 1, msg_type, 93, 2, 0, 0, 94, 3, 1, 2, 1, 60, len(vendor)]) + vendor
    opts += bytes([97, len(opt97)]) + opt97 + bytes([55, 4, 1, 3, 43, 66]) + extra + b"\xff"
    return head + b"\x63\x82\x53\x63" + opts

def parse(data):
    options = dhcp_options(data)
    return {"xid": struct.unpack("!I", data[4:8])[0], "yiaddr": socket.inet_ntoa(data[16:20]),
            "siaddr": socket.inet_ntoa(data[20:24]), "file": data[108:236].split(b"\0")[0].decode(),
            "type": options.get(53, b"\0")[0], "opt43": options.get(43, b"").hex(),
            "opt66": options.get(66, b"").decode(), "opt60": options.get(60, b"").decode(),
            "opt97": options.get(97, b"").hex(), "server": socket.inet_ntoa(options.get(54, bytes(4))),
            "netmask": socket.inet_ntoa(options.get(1, bytes(4)))}

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")  # 255.255.255.255 has no route otherwise
sock.bind(("0.0.0.0", 68))
sock.settimeout(timeout)

def exchange(msg_type, want, extra=b""):
    sock.sendto(packet(msg_type, extra), ("255.255.255.255", 67))
    while True:
        data, _ = sock.recvfrom(2048)
        reply = parse(data)
        if reply["xid"] == xid and reply["type"] == want:
            return reply

offer = exchange(1, 2)
ack = exchange(3, 5, bytes([50, 4]) + socket.inet_aton(offer["yiaddr"]) + bytes([54, 4]) + socket.inet_aton(offer["server"]))
result = {"offer": offer, "ack": ack}

# ---- TFTP, as the bootloader does it after DHCP ----
BLKSIZE = 1468

def rrq(name):
    return struct.pack("!H", 1) + b"%s\0octet\0tsize\0000\0blksize\0%d\0" % (name.encode(), BLKSIZE)

def tftp_get(server, name, probe=False):
    """Returns (data, oack options, extra packets seen after a probe's ERROR)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ack["yiaddr"], 0))
    s.settimeout(3)
    s.sendto(rrq(name), (server, 69))
    data, options, expected, peer, last_sent = bytearray(), {}, 1, None, None
    for _ in range(100000):
        try:
            packet_bytes, where = s.recvfrom(65536)
        except socket.timeout:
            if last_sent is None:
                raise SystemExit("TFTP %s: no answer from %s" % (name, server))
            s.sendto(last_sent, peer)  # our ACK was lost: send it again
            continue
        if peer is None:
            peer = where
        opcode = struct.unpack("!H", packet_bytes[:2])[0]
        if opcode == 5:
            raise SystemExit("TFTP %s: ERROR %d %s" % (name, struct.unpack("!H", packet_bytes[2:4])[0],
                                                      packet_bytes[4:].split(b"\0")[0].decode()))
        if opcode == 6:  # OACK
            fields = packet_bytes[2:].split(b"\0")
            options = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
            last_sent = struct.pack("!HH", 4, 0)
            s.sendto(last_sent, peer)
            continue
        if opcode != 3:
            continue
        block = struct.unpack("!H", packet_bytes[2:4])[0]
        if block != expected & 0xffff:
            s.sendto(last_sent, peer)  # a duplicate: re-acknowledge what we have
            continue
        data += packet_bytes[4:]
        if probe:
            # The bootloader's size probe: one block read, then it gives up on the transfer.
            s.sendto(struct.pack("!HH", 5, 0) + b"Early terminate\0", peer)
            s.settimeout(1.5)
            extra = 0
            try:
                while True:
                    s.recvfrom(65536)
                    extra += 1
            except socket.timeout:
                pass
            return bytes(data), options, extra
        last_sent = struct.pack("!HH", 4, block)
        s.sendto(last_sent, peer)
        if len(packet_bytes) - 4 < int(options.get("blksize", 512)):
            return bytes(data), options, 0
        expected += 1
    raise SystemExit("TFTP %s: too many packets" % name)

def use_leased_address():
    subprocess.run(["ip", "addr", "add", "%s/%s" % (ack["yiaddr"], ack["netmask"]), "dev", "eth0"], check=True)
    time.sleep(0.2)

if tftp_dir is not None:
    os.makedirs(tftp_dir, exist_ok=True)
    use_leased_address()
    server, prefix, files = ack["siaddr"], args[1] + "/", {}

    def fetch(name, probe=False):
        started = time.time()
        data, options, extra = tftp_get(server, prefix + name, probe)
        entry = {"bytes": len(data), "tsize": options.get("tsize"), "blksize": options.get("blksize"),
                 "seconds": round(time.time() - started, 3)}
        if probe:
            entry["packets_after_error"] = extra
            files["probe:" + name] = entry
        else:
            open(os.path.join(tftp_dir, name), "wb").write(data)
            files[name] = entry
        return data

    config = fetch("config.txt").decode()
    kernel = "kernel_2712.img"
    for line in config.splitlines():
        if line.strip().startswith("kernel="):
            kernel = line.strip()[len("kernel="):]
    fetch(kernel, probe=True)
    fetch("cmdline.txt")
    fetch("bcm2712-rpi-5-b.dtb")
    fetch(kernel)
    # auto_initramfs=1 (Raspberry Pi OS's default): the firmware loads the initramfs named after the
    # kernel (kernel8.img -> initramfs8, kernel_2712.img -> initramfs_2712) when there is one.
    initramfs = None
    if any(line.strip() == "auto_initramfs=1" for line in config.splitlines()):
        initramfs = kernel.replace("kernel", "initramfs", 1)
        if initramfs.endswith(".img"):
            initramfs = initramfs[:-4]
        try:
            fetch(initramfs)
        except SystemExit as e:  # none there: the firmware boots without one
            files["missing:" + initramfs] = str(e)
            initramfs = None
    result["tftp"] = {"kernel": kernel, "initramfs": initramfs, "files": files}

# ---- HTTP boot (mode 7), as the bootloader does it after DHCP ----
HTTP_TIMEOUT = 120  # per socket operation: generous, a busy test machine serves slowly

def http_get(host, port, path, destination):
    """GETs http://host:port/path from the leased address into destination (written under a temporary
    name, renamed when complete). Returns (size, sha256 digest, seconds, HTTP status line)."""
    started = time.time()
    connection = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT, source_address=(ack["yiaddr"], 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise SystemExit("HTTP GET http://%s:%d%s: %d %s" % (host, port, path, response.status, response.reason))
        digest, size, partial = hashlib.sha256(), 0, destination + ".part"
        with open(partial, "wb") as out:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        length = response.getheader("Content-Length")
        if length is not None and int(length) != size:
            raise SystemExit("HTTP GET http://%s:%d%s: %d bytes, Content-Length said %s" % (host, port, path, size, length))
        os.rename(partial, destination)
        return size, digest.digest(), time.time() - started
    except (OSError, http.client.HTTPException) as e:
        raise SystemExit("HTTP GET http://%s:%d%s: %s" % (host, port, path, e))
    finally:
        connection.close()

def parse_boot_sig(text):
    """boot.sig as rpi-eeprom-digest writes it -> (sha256 hex, ts, signature bytes); SystemExit naming
    the line that is wrong."""
    lines = text.splitlines()
    if len(lines) != 3:
        raise SystemExit("boot.sig: %d lines, expected 3 (sha256, ts:, rsa2048:)" % len(lines))
    if not re.fullmatch(r"[0-9a-f]{64}", lines[0]):
        raise SystemExit("boot.sig line 1: expected the sha256 of boot.img as 64 lower-case hex digits, got %r" % lines[0][:80])
    ts = re.fullmatch(r"ts: ([0-9]+)", lines[1])
    if not ts:
        raise SystemExit("boot.sig line 2: expected 'ts: <unix seconds>', got %r" % lines[1][:80])
    signature = re.fullmatch(r"rsa2048: ([0-9a-f]{512})", lines[2])
    if not signature:
        raise SystemExit("boot.sig line 3: expected 'rsa2048: ' and 512 hex digits, got %r" % lines[2][:80])
    return lines[0], int(ts.group(1)), bytes.fromhex(signature.group(1))

def verify_boot_img(sig_text, img_digest, public_key_pem):
    """The bootloader's check: the sha256 in boot.sig is boot.img's, and the signature (over boot.img's
    bytes, i.e. its sha256) verifies with the EEPROM's RSA-2048 public key. Returns the verdict dict."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    sig_sha256, ts, signature = parse_boot_sig(sig_text)
    verdict = {"ok": False, "sha256": img_digest.hex(), "ts": ts}
    if sig_sha256 != img_digest.hex():
        verdict["reason"] = "sha256 mismatch: boot.sig says %s, boot.img has %s" % (sig_sha256, img_digest.hex())
        return verdict
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048:
        raise SystemExit("--public-key: not an RSA-2048 public key (the only kind the bootloader takes)")
    try:
        key.verify(signature, img_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        verdict["reason"] = "bad signature: the rsa2048 line of boot.sig does not verify with the public key"
        return verdict
    verdict["ok"] = True
    return verdict

if http_boot is not None:
    spec = re.fullmatch(r"([^:/]+):([0-9]+)/(.+)", http_boot)
    if not spec:
        raise SystemExit("--http-boot %r: expected HOST:PORT/PATH (the EEPROM's HTTP_HOST, HTTP_PORT, HTTP_PATH)" % http_boot)
    host, port, path = spec.group(1), int(spec.group(2)), spec.group(3).strip("/")
    public_key_pem = open(public_key_file, "rb").read()
    os.makedirs(http_out_dir, exist_ok=True)
    use_leased_address()
    files = {}
    for name in ("boot.sig", "boot.img"):  # the bootloader's order
        size, digest, seconds = http_get(host, port, "/%s/%s" % (path, name), os.path.join(http_out_dir, name))
        files[name] = {"bytes": size, "seconds": round(seconds, 3),
                       "mib_per_s": round(size / (1 << 20) / seconds, 2) if seconds > 0 else None}
        if name == "boot.img":
            img_digest = digest
    started = time.time()
    verdict = verify_boot_img(open(os.path.join(http_out_dir, "boot.sig"), encoding="ascii", errors="replace").read(), img_digest, public_key_pem)
    verdict["seconds"] = round(time.time() - started, 3)
    result["http"] = {"url": "http://%s:%d/%s/" % (host, port, path), "source": ack["yiaddr"], "files": files,
                      "verification": verdict}
    if not verdict["ok"]:
        print(json.dumps(result))
        print("HTTP boot: boot.img refused: %s" % verdict["reason"], file=sys.stderr)
        sys.exit(1)
print(json.dumps(result))
