"""Starts one program confined in fresh Linux namespaces (user, mount, network, PID, IPC, UTS).

Run as `python -I confine_launcher.py SPEC_FILE` by engine/confine.py; imports nothing from
tbd_agents on purpose. The spec (JSON, 0600, deleted once read) says what to run and what the
program may see. Steps:

1. open every path to be shown (O_PATH) while still the server's user, so a root server can show
   files that `nobody` could not even look up (the interpreter under /root);
2. root server: switch to the sandbox user; then unshare the namespaces and map that one uid/gid;
3. fork the namespace's init, which builds the view on a tmpfs (read-only binds of the allowed
   paths, the work dir read-write, a fresh /proc of the new PID namespace), pivots into it, and
   forks the program; the program gets no_new_privs, Landlock rules, rlimits, then exec;
4. this process stays in the new network namespace as the relay from 127.0.0.1:PORT to the egress
   proxy's unix socket (only when the tool may use the network) and mirrors the exit status.

Exit code 125 with a line on stderr means the confinement itself failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
from typing import Any

Spec = dict[str, Any]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # same on x86_64 and aarch64
AT_FDCWD, AT_RECURSIVE, OPEN_TREE_CLONE = -100, 0x8000, 1
SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on both)
STAGE = "/tmp"  # noqa: S108 - a mount point in our private mount namespace, not a temp file
VIEW_TMP = STAGE  # inside the view: the call's own work directory
MB = 1024 * 1024

libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(Exception):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise ConfineError(f"{what}: {os.strerror(err)}")
    return result


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = [None if v is None else v.encode() for v in (src, dst, fstype)]
    _check(
        libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), data.encode() or None),
        f"mount {dst}",
    )


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --- the view ------------------------------------------------------------------------------
def _lock_flags(path: str) -> int:
    """Flags a remount must keep (the kernel refuses to clear locked ones in a user namespace)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):  # fmt: skip
        if f & st:
            out |= ms
    return out


def _clone(path: str) -> int:
    """A detached copy of the mount at `path` (open_tree), attachable in another namespace."""
    nr = SYS_OPEN_TREE
    fd = libc.syscall(nr, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC)
    if fd < 0 and ctypes.get_errno() == errno.EINVAL:  # locked submounts: copy them too
        fd = libc.syscall(
            nr, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE
        )
    return _check(fd, f"open_tree {path}")


def _bind(fd: int, dst: str, writable: bool, device: bool) -> None:
    _check(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, dst.encode(), 4), f"move_mount {dst}")
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | _lock_flags(dst)
    flags |= 0 if device else MS_NODEV
    flags |= 0 if writable else MS_RDONLY
    _mount(None, dst, None, flags)


def build_view(spec: Spec, fds: list[int | None] | None) -> None:
    """Runs as init of the new PID namespace: build the view under STAGE and pivot into it.
    `fds`: the mounts cloned before the user switch (root server), else cloned here."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if fds is None:
        fds = open_sources(spec)
    _mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for entry, fd in zip(spec["binds"], fds, strict=True):
        dst = STAGE + entry["dst"]
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        if fd is None:  # a symlink (e.g. /bin -> usr/bin) is recreated, not bound
            os.symlink(entry["link"], dst)
            continue
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(dst, mode=0o755, exist_ok=True)
        else:
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        _bind(fd, dst, bool(entry.get("rw")), bool(entry.get("dev")))
        os.close(fd)
    for name, text in spec.get("files", {}).items():
        os.makedirs(os.path.dirname(STAGE + name), mode=0o755, exist_ok=True)
        with open(STAGE + name, "w") as f:
            f.write(text)
    os.makedirs(STAGE + "/proc", exist_ok=True)
    _mount("proc", STAGE + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(STAGE)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise ConfineError(f"pivot_root: unsupported machine {os.uname().machine}")
    _check(libc.syscall(nr, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(
        None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _lock_flags("/")
    )
    with contextlib.suppress(OSError):  # no nested user namespaces (attack surface); best effort
        _write("/proc/sys/user/max_user_namespaces", "0")


# --- Landlock -----------------------------------------------------------------------------
def landlock(spec: Spec) -> int:
    """Restrict the program to the view's read-only paths, writes under /tmp, /dev and the
    spec's `writable` paths (the bash tool's workspace), and
    (ABI 4+) TCP connect to the relay port only. Returns the ABI used (0: unavailable)."""
    create, add, restrict = SYS_LANDLOCK
    abi = libc.syscall(create, None, 0, 1)
    if abi <= 0:
        return 0
    read = 1 | 4 | 8  # EXECUTE, READ_FILE, READ_DIR
    fs_all = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
    fs_all |= 1 << 15 if abi >= 5 else 0
    net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals
    attr = struct.pack("QQQ", fs_all, net, scoped)[: 8 * (1 + (abi >= 4) + (abi >= 6))]
    ruleset = _check(libc.syscall(create, attr, len(attr), 0), "landlock_create_ruleset")
    file_rights = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    rules = [("/", read), (VIEW_TMP, fs_all), ("/dev", file_rights | 8)]
    rules += [(path, fs_all) for path in spec.get("writable", ())]  # the bash tool's workspace
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        rule = struct.pack("=Qi", rights & fs_all, fd)
        _check(libc.syscall(add, ruleset, 1, rule, 0), f"landlock_add_rule {path}")
        os.close(fd)
    relay = spec.get("relay")
    if net and relay:
        rule = struct.pack("QQ", 2, int(relay["port"]))  # CONNECT_TCP to the relay only
        _check(libc.syscall(add, ruleset, 2, rule, 0), "landlock_add_rule port")
    _check(libc.syscall(restrict, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return int(abi)


def apply_limits(limits: Spec | None) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not limits:
        return
    for kind, value in ((resource.RLIMIT_AS, limits["memory_mb"] * MB),
                        (resource.RLIMIT_FSIZE, limits["file_size_mb"] * MB),
                        (resource.RLIMIT_NOFILE, limits["open_files"]),
                        (resource.RLIMIT_CPU, limits["cpu_seconds"])):  # fmt: skip
        hard = value + 1 if kind == resource.RLIMIT_CPU else value
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(kind, (value, hard))
    if "processes" in limits:  # the bash tool forks (custom tools get 0 from their runner)
        n = int(limits["processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


# --- processes ----------------------------------------------------------------------------
def run_program(spec: Spec) -> None:
    """The program's process (PID 2): never returns."""
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if spec.get("landlock", True):
        landlock(spec)
    apply_limits(spec.get("limits"))
    os.chdir(spec.get("cwd", VIEW_TMP))
    os.execve(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 - the confined program


def namespace_init(spec: Spec, fds: list[int | None] | None, status_w: int) -> None:
    """PID 1 of the new namespace: build the view, run the program, report its wait status."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        build_view(spec, fds)
        pid = os.fork()
        if pid == 0:
            os.close(status_w)
            run_program(spec)
    except BaseException as exc:
        os.write(2, f"sandbox: cannot confine the process: {exc}\n".encode())
        os._exit(125)
    while True:
        got, status = os.waitpid(-1, 0)
        if got == pid:
            os.write(status_w, str(status).encode())
            os._exit(0)


def relay(listener: socket.socket | None, target: str, status_r: int) -> bytes:
    """Until the program's status arrives on `status_r`: forward each TCP connection to
    127.0.0.1:PORT to the egress proxy's unix socket. (A process that unshared its PID namespace
    cannot start threads, so this is one select loop.) Returns the reported status."""
    sel = selectors.DefaultSelector()
    sel.register(status_r, selectors.EVENT_READ)
    if listener is not None:
        sel.register(listener, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}
    while True:
        for key, _ in sel.select():
            if key.fileobj == status_r:
                return os.read(status_r, 64)
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                client, _ = listener.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(target)
                except OSError:
                    client.close()
                    upstream.close()
                    continue
                peers[client], peers[upstream] = upstream, client
                sel.register(client, selectors.EVENT_READ)
                sel.register(upstream, selectors.EVENT_READ)
                continue
            other = peers[sock]
            try:
                data = sock.recv(65536)
                if data:
                    other.sendall(data)
                    continue
            except OSError:
                pass
            for s in (sock, other):
                sel.unregister(s)
                peers.pop(s, None)
                s.close()


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0x1 | 0x40)  # IFF_UP | IFF_RUNNING
        fcntl.ioctl(s.fileno(), 0x8914, req + b"\0" * 22)  # SIOCSIFFLAGS


def enter_namespaces(drop: list[int] | None) -> None:
    if drop:
        os.setgroups([])
        os.setgid(drop[1])
        os.setuid(drop[0])
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # else /proc/self/uid_map stays root's
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    try:
        _check(libc.unshare(flags), "unshare")
    except ConfineError as exc:
        raise ConfineError(
            f"{exc} (user namespaces unavailable: enable them, e.g. sysctl "
            "kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0, or set "
            "SANDBOX_ISOLATION=none)"
        ) from None
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def open_sources(spec: Spec) -> list[int | None]:
    return [None if e.get("link") is not None else _clone(e["src"]) for e in spec["binds"]]


def main() -> int:
    path = sys.argv[1]
    with open(path) as f:
        spec = json.load(f)
    os.unlink(path)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        fds = open_sources(spec) if spec.get("drop") else None
        enter_namespaces(spec.get("drop"))
        loopback_up()
        listener = None
        if spec.get("relay"):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", int(spec["relay"]["port"])))
            listener.listen(64)
    except (ConfineError, OSError) as exc:
        os.write(2, f"sandbox: cannot confine the process: {exc}\n".encode())
        return 125
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_r)
        if listener is not None:
            listener.close()
        namespace_init(spec, fds, status_w)
    os.close(status_w)
    for fd in fds or ():
        if fd is not None:
            os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os.kill(pid, signal.SIGKILL))
    relay_to = spec["relay"]["socket"] if spec.get("relay") else ""
    reported = relay(listener, relay_to, status_r)
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    if not reported:
        return 125
    status = int(reported)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 125


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            sys.exit(1)
        raise
