"""Shared by the scripted DHCP test clients in this folder (imported: a script's own folder is on
sys.path): the options of a reply, read the way the clients all need them, and the wait for a reply
to one exchange."""
import socket
import struct
import time


def dhcp_options(data):
    """The options of a DHCP packet (after the 240-byte fixed part and magic cookie) as {code: bytes},
    up to the END option; PAD bytes are skipped, and a truncated last option ends the walk."""
    options, i = {}, 240
    while i + 1 < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        options[data[i]] = data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return options


def wait_for_reply(sock, xid, accept, timeout):
    """The first reply to transaction `xid` whose message type (option 53) is in `accept`, as
    (data, options, type), or None once `timeout` seconds have passed. Short and foreign packets, and
    replies of other types, are skipped."""
    end = time.time() + timeout
    while time.time() < end:
        sock.settimeout(max(0.01, end - time.time()))
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            return None
        if len(data) < 240 or struct.unpack("!I", data[4:8])[0] != xid:
            continue
        options = dhcp_options(data)
        kind = options.get(53, b"\0")[0]
        if kind in accept:
            return data, options, kind
    return None
