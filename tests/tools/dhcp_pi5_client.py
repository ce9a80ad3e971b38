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
usage: dhcp_pi5_client.py MAC SERIAL_HEX [TIMEOUT_S] [--tftp DIR]"""
import json, os, socket, struct, subprocess, sys, time
from dhcp_wire import dhcp_options

args = [a for a in sys.argv[1:]]
tftp_dir = None
if "--tftp" in args:
    at = args.index("--tftp")
    tftp_dir = args[at + 1]
    del args[at:at + 2]
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

if tftp_dir is not None:
    os.makedirs(tftp_dir, exist_ok=True)
    subprocess.run(["ip", "addr", "add", "%s/%s" % (ack["yiaddr"], ack["netmask"]), "dev", "eth0"], check=True)
    time.sleep(0.2)
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
print(json.dumps(result))
