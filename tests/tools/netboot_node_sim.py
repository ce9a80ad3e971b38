#!/usr/bin/env python3
"""COUNT simulated machines netbooting at once, each as a BIOS PXE ROM + iPXE would: DHCP as the PXE
ROM (DISCOVER/OFFER/REQUEST/ACK, vendor class PXEClient arch 0) -> TFTP of the offered file (blksize
1468) -> DHCP again as iPXE (option 77 "iPXE") -> HTTP GET of the offered script URL -> the chained
per-node script -> HTTP GET of its kernel and initrds. Every transfer is made from the node's leased
address (added to IFACE), as the real node would. Prints one JSON object: nodes ok, time to the last
boot, per-stage medians and maxima. Runs inside a test network namespace; MACs 02:50:00:00:xx:xx.
usage: netboot_node_sim.py IFACE COUNT [DEADLINE_S]"""
import json, os, socket, statistics, struct, subprocess, sys, threading, time, urllib.parse
import http.client
from dhcp_wire import wait_for_reply

iface, count = sys.argv[1], int(sys.argv[2])
deadline = time.time() + (float(sys.argv[3]) if len(sys.argv) > 3 else 300)
address_lock = threading.Lock()
start = threading.Barrier(count + 1)

def dhcp_packet(xid, mac, msg_type, ipxe, extra=b""):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + bytes(16) + mac + bytes(10) + bytes(192)
    vendor = b"PXEClient:Arch:00000:UNDI:002001"
    opts = bytes([53, 1, msg_type, 93, 2, 0, 0, 60, len(vendor)]) + vendor
    if ipxe:
        opts += bytes([77, 4]) + b"iPXE" + bytes([175, 3, 0x15, 1, 1])  # user class, an encapsulated iPXE option
    return head + b"\x63\x82\x53\x63" + opts + extra + b"\xff"

def dhcp(mac, ipxe):
    """DORA; returns (yiaddr, siaddr, boot file)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.bind(("0.0.0.0", 68))
    try:
        while time.time() < deadline:
            xid = int.from_bytes(os.urandom(4), "big")
            sock.sendto(dhcp_packet(xid, mac, 1, ipxe), ("255.255.255.255", 67))
            offer = wait_for_reply(sock, xid, {2}, 2.0)
            if not offer:
                continue
            data, options, _ = offer
            sock.sendto(dhcp_packet(xid, mac, 3, ipxe, bytes([50, 4]) + data[16:20] + bytes([54, 4]) + options[54]),
                        ("255.255.255.255", 67))
            ack = wait_for_reply(sock, xid, {5}, 2.0)
            if ack:
                data, options, _ = ack
                file = data[108:236].split(b"\0")[0].decode()
                return socket.inet_ntoa(data[16:20]), socket.inet_ntoa(data[20:24]), file
        raise RuntimeError("DHCP: no lease before the deadline")
    finally:
        sock.close()

def tftp(source, server, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(2)
    request = struct.pack("!H", 1) + name.encode() + b"\0octet\0blksize\0001468\0tsize\0000\0"
    s.sendto(request, (server, 69))
    received, expected, peer, last, blksize, tsize, tries = 0, 1, None, request, 512, None, 0
    while True:
        try:
            data, where = s.recvfrom(65536)
        except socket.timeout:
            tries += 1
            if tries > 5:
                raise RuntimeError("TFTP %s: timed out" % name)
            s.sendto(last, peer or (server, 69))
            continue
        tries = 0
        peer = peer or where
        opcode = struct.unpack("!H", data[:2])[0]
        if opcode == 5:
            raise RuntimeError("TFTP %s: ERROR %s" % (name, data[4:-1].decode()))
        if opcode == 6:
            fields = data[2:].split(b"\0")
            options = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
            blksize, tsize = int(options.get("blksize", 512)), int(options["tsize"]) if "tsize" in options else None
            last = struct.pack("!HH", 4, 0)
            s.sendto(last, peer)
            continue
        if opcode != 3:
            continue
        block = struct.unpack("!H", data[2:4])[0]
        if block == expected & 0xffff:
            received += len(data) - 4
            expected += 1
            last = struct.pack("!HH", 4, block)
        s.sendto(last, peer)
        if block == (expected - 1) & 0xffff and len(data) - 4 < blksize:
            if tsize is not None and tsize != received:
                raise RuntimeError("TFTP %s: %d bytes, tsize said %d" % (name, received, tsize))
            return received

def http_get(source, url):
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60, source_address=(source, 0))
    connection.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
    response = connection.getresponse()
    size, body = 0, b""
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if size <= 65536:
            body += chunk
    connection.close()
    if response.status != 200:
        raise RuntimeError("HTTP %s: status %d" % (url, response.status))
    length = response.getheader("Content-Length")
    if length is not None and int(length) != size:
        raise RuntimeError("HTTP %s: %d bytes of %s" % (url, size, length))
    return body, size

results = [None] * count

def node(index):
    mac = bytes([2, 0x50, 0, 0, index >> 8, index & 255])
    hexhyp = "-".join("%02x" % b for b in mac)
    stages = {}
    start.wait()
    t0 = time.time()
    try:
        address, siaddr, file = dhcp(mac, ipxe=False)
        with address_lock:
            subprocess.run(["ip", "addr", "add", address + "/32", "dev", iface], check=True)
        stages["dhcp_rom"] = time.time() - t0
        t = time.time()
        tftp_bytes = tftp(address, siaddr, file)
        stages["tftp"] = time.time() - t
        t = time.time()
        ipxe_address, _, script_url = dhcp(mac, ipxe=True)
        if ipxe_address != address:
            raise RuntimeError("iPXE got %s, the ROM had %s" % (ipxe_address, address))
        stages["dhcp_ipxe"] = time.time() - t
        t = time.time()
        chain, _ = http_get(address, script_url)
        target = [line.split()[1] for line in chain.decode().splitlines() if line.startswith("chain ")][0]
        target = target.replace("${net0/mac:hexhyp}", hexhyp).replace("${uuid}", "").replace(
            "${platform}", "pcbios").replace("${buildarch}", "i386")
        script, _ = http_get(address, target)
        urls = [line.split()[1] for line in script.decode().splitlines() if line.startswith("kernel ")]
        urls += [line.split()[3] for line in script.decode().splitlines() if line.startswith("initrd --name ")]
        if not urls:
            raise RuntimeError("no kernel in the script: " + script.decode())
        http_bytes = sum(http_get(address, url)[1] for url in urls)
        stages["http"] = time.time() - t
        results[index] = {"ok": True, "done": time.time(), "stages": stages, "tftp_bytes": tftp_bytes,
                          "http_bytes": http_bytes}
    except Exception as e:  # one failed node is reported, not fatal to the others
        results[index] = {"ok": False, "error": str(e), "stages": stages}

threads = [threading.Thread(target=node, args=(i,)) for i in range(count)]
for thread in threads:
    thread.start()
start.wait()
began = time.time()
for thread in threads:
    thread.join()
ok = [r for r in results if r and r["ok"]]
summary = {"nodes": count, "ok": len(ok), "failed": [r for r in results if not (r and r["ok"])][:5]}
if ok:
    summary["time_to_last_boot_s"] = round(max(r["done"] for r in ok) - began, 2)
    summary["time_to_first_boot_s"] = round(min(r["done"] for r in ok) - began, 2)
    for stage in ("dhcp_rom", "tftp", "dhcp_ipxe", "http"):
        values = [r["stages"][stage] for r in ok]
        summary[stage] = {"median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}
    summary["tftp_bytes_per_node"] = ok[0]["tftp_bytes"]
    summary["http_bytes_per_node"] = ok[0]["http_bytes"]
print(json.dumps(summary))
