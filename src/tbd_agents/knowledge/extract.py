"""Text extraction for knowledge ingestion: .txt .md .html .pdf .json .csv.

Every extractor returns plain text in which structure survives as Markdown-like lines: headings as
`# …` lines and paragraphs separated by blank lines, so the chunker can cut at section and
paragraph boundaries. Citation offsets point into this text (stored as the item's text_content).

Every extractor works within `ExtractLimits` (PDF pages, characters of text, JSON nesting depth):
a file over a limit is refused with an error naming the limit and its setting. The API runs these
functions in a worker process (`tbd_agents.knowledge.isolate`) that also bounds time and memory.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from tbd_agents.errors import InvalidData, PayloadTooLarge

if TYPE_CHECKING:
    from tbd_agents.config import Settings

#: content type by file extension, for uploads that do not say (or say octet-stream).
CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".json": "application/json",
    ".csv": "text/csv",
}
SUPPORTED = ", ".join(sorted({e for e in CONTENT_TYPES if len(e) <= 5}))


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """What one file may cost to extract (defaults are the settings' defaults)."""

    max_pdf_pages: int = 2000
    max_chars: int = 5_000_000
    max_json_depth: int = 64
    timeout_seconds: float = 60.0
    memory_mb: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ExtractLimits:
        return cls(
            max_pdf_pages=settings.knowledge_max_pdf_pages,
            max_chars=settings.knowledge_max_extracted_chars,
            max_json_depth=settings.max_json_depth,
            timeout_seconds=settings.knowledge_extract_timeout_seconds,
            memory_mb=settings.knowledge_extract_memory_mb,
        )


def too_much_text(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file expands to more than {limit:,} characters of text "
        "(KNOWLEDGE_MAX_EXTRACTED_CHARS): split it or raise the setting",
        details={"limit": limit, "setting": "KNOWLEDGE_MAX_EXTRACTED_CHARS"},
    )


class _Budget:
    """Counts characters produced so far; raises as soon as the limit is passed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, text: str) -> str:
        self.used += len(text)
        if self.used > self.limit:
            raise too_much_text(self.limit)
        return text


# A JSON string (escapes included), written without alternation so the regex stays linear.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_CURLY_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


def json_too_deep(data: bytes, limit: int) -> bool:
    """True if arrays/objects in the JSON text `data` nest deeper than `limit`.

    Strings are cut out and only brackets kept; each pass then deletes the innermost `[]`
    pairs, so a document of depth d is empty after d passes. Runs at C speed (regex and
    bytes methods), never recurses, and never builds the document.
    """
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    brackets = brackets.translate(_CURLY_TO_SQUARE)
    for passes in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # unbalanced: only `]…][…[` is left
            return passes + shorter.count(b"[") > limit
        brackets = shorter
    return bool(brackets)


def json_depth_error(limit: int, what: str) -> InvalidData:
    return InvalidData(
        f"{what} nests arrays/objects deeper than {limit} levels (MAX_JSON_DEPTH): "
        "flatten it or raise the setting",
        details={"limit": limit, "setting": "MAX_JSON_DEPTH"},
    )


def content_type_of(file_name: str | None, declared: str | None = None) -> str:
    """The content type to extract with: the declared one unless generic, else by extension."""
    if declared:
        base = declared.split(";")[0].strip().lower()
        if base and base not in ("application/octet-stream", "binary/octet-stream"):
            return base
    ext = PurePath(file_name or "").suffix.lower()
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    raise InvalidData(
        f"cannot tell the type of {file_name or 'the upload'!r}: upload one of {SUPPORTED} "
        "or send a Content-Type"
    )


def decode_text(data: bytes) -> str:
    """Bytes as text: UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class _HtmlText(HTMLParser):
    _BLOCK_TAGS = (
        "p div section article header footer li ul ol table tr blockquote pre br hr main aside "
        "nav dl dt dd figure figcaption"
    )
    _BLOCKS = frozenset(_BLOCK_TAGS.split())
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str, limits: ExtractLimits | None = None) -> tuple[str, str]:
    """(text, title) of an HTML document; headings become `#` lines."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    text = _normalise("\n".join(lines))
    limit = (limits or ExtractLimits()).max_chars
    if len(text) > limit:
        raise too_much_text(limit)
    return text, parser.title.strip()


def pdf_to_text(data: bytes, limits: ExtractLimits | None = None) -> tuple[str, str]:
    """(text, title) of a PDF, pages separated by blank lines (pypdf). Refused before any page
    is read when it has too many pages, and at the first page that passes the text limit."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    limits = limits or ExtractLimits()
    budget = _Budget(limits.max_chars)
    try:
        reader = PdfReader(io.BytesIO(data))
        count = len(reader.pages)
        if count > limits.max_pdf_pages:
            raise PayloadTooLarge(
                f"the PDF has {count:,} pages, more than {limits.max_pdf_pages:,} "
                "(KNOWLEDGE_MAX_PDF_PAGES): split it or raise the setting",
                details={"limit": limits.max_pdf_pages, "setting": "KNOWLEDGE_MAX_PDF_PAGES"},
            )
        pages = [budget.spend(page.extract_text() or "") for page in reader.pages]
        meta = reader.metadata
        title = str(meta.get("/Title") or "") if meta is not None else ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidData(f"could not read the PDF ({exc}); is the file a valid PDF?") from exc
    text = _normalise("\n\n".join(p.strip() for p in pages))
    if not text:
        raise InvalidData("the PDF has no extractable text (scanned images need OCR first)")
    return text, title


def _flatten(value: Any, path: str, out: list[str], budget: _Budget) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{path}.{key}" if path else str(key), out, budget)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _flatten(inner, f"{path}[{i}]", out, budget)
    else:
        out.append(budget.spend(f"{path or 'value'}: {value}\n"))


def json_to_text(raw: str, limits: ExtractLimits | None = None) -> str:
    """One `path: value` line per leaf; top-level list entries become paragraphs. Nesting is
    checked before parsing (MAX_JSON_DEPTH) and the lines are counted against the text limit
    while they are made (each leaf repeats its path, so text can outgrow the file)."""
    limits = limits or ExtractLimits()
    if json_too_deep(raw.encode(), limits.max_json_depth):
        raise json_depth_error(limits.max_json_depth, "the JSON file")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidData(f"the JSON file is not valid JSON: {exc}") from exc
    entries = doc if isinstance(doc, list) else [doc]
    budget = _Budget(limits.max_chars)
    blocks = []
    for entry in entries:
        lines: list[str] = []
        _flatten(entry, "", lines, budget)
        blocks.append("".join(lines))
    return _normalise("\n\n".join(blocks))


def csv_to_text(raw: str, limits: ExtractLimits | None = None) -> str:
    """One paragraph per row: `column: value` pairs joined by `; `."""
    try:
        dialect = csv.Sniffer().sniff(raw[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(raw), dialect))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    budget = _Budget((limits or ExtractLimits()).max_chars)
    lines = [
        budget.spend("; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip()))
        for row in body
    ]
    return _normalise("\n\n".join(line for line in lines if line))


def extract(data: bytes, content_type: str, limits: ExtractLimits | None = None) -> tuple[str, str]:
    """(text, title) of a file's bytes; InvalidData for an unsupported type or a broken file,
    PayloadTooLarge when the file is over one of `limits`."""
    limits = limits or ExtractLimits()
    if content_type == "application/pdf":
        return pdf_to_text(data, limits)
    raw = decode_text(data)
    if content_type == "text/html":
        return html_to_text(raw, limits)
    if content_type == "application/json":
        return json_to_text(raw, limits), ""
    if content_type == "text/csv":
        return csv_to_text(raw, limits), ""
    if content_type in ("text/plain", "text/markdown"):
        text = _normalise(raw)
        if len(text) > limits.max_chars:
            raise too_much_text(limits.max_chars)
        return text, ""
    raise InvalidData(f"cannot extract text from {content_type}: upload one of {SUPPORTED}")
