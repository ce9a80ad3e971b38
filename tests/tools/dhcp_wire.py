"""Shared by the scripted DHCP test clients in this folder (imported: a script's own folder is on
sys.path): the options of a reply, read the way the clients all need them."""


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
