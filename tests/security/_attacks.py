"""The C2 / M4 attacks as one custom tool: each probe reports what it got, never raises."""

ATTACK_TOOL = r"""
import os, socket

def _try(fn):
    try:
        return "GOT " + repr(fn())[:200]
    except BaseException as exc:
        return "denied " + type(exc).__name__

def run(data_dir, key_file, parent_pid, unix_socket):
    def tcp(port):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    def unix():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(unix_socket)
        return "connected"
    return {
        "key_file": _try(lambda: open(key_file).read()),
        "data_dir": _try(lambda: os.listdir(data_dir)),
        "parent_environ": _try(lambda: open(f"/proc/{parent_pid}/environ", "rb").read()),
        "redis": _try(lambda: tcp(6379)),
        "postgres": _try(lambda: tcp(5432)),
        "unix_socket": _try(unix),
        "uid": os.getuid(),
    }
"""
