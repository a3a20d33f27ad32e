"""Text extraction for knowledge ingestion: .txt .md .html .pdf .json .csv.

Every extractor returns plain text in which structure survives as Markdown-like lines: headings as
`# …` lines and paragraphs separated by blank lines, so the chunker can cut at section and
paragraph boundaries. Citation offsets point into this text (stored as the item's text_content).
"""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Any

from tbd_agents.errors import InvalidData

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


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML document; headings become `#` lines."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return _normalise("\n".join(lines)), parser.title.strip()


def pdf_to_text(data: bytes) -> tuple[str, str]:
    """(text, title) of a PDF, pages separated by blank lines (pypdf)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
        title = str(meta.get("/Title") or "") if meta is not None else ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidData(f"could not read the PDF ({exc}); is the file a valid PDF?") from exc
    text = _normalise("\n\n".join(p.strip() for p in pages))
    if not text:
        raise InvalidData("the PDF has no extractable text (scanned images need OCR first)")
    return text, title


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _flatten(inner, f"{path}[{i}]", out)
    else:
        out.append(f"{path or 'value'}: {value}")


def json_to_text(raw: str) -> str:
    """One `path: value` line per leaf; top-level list entries become paragraphs."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidData(f"the JSON file is not valid JSON: {exc}") from exc
    entries = doc if isinstance(doc, list) else [doc]
    blocks = []
    for entry in entries:
        lines: list[str] = []
        _flatten(entry, "", lines)
        blocks.append("\n".join(lines))
    return _normalise("\n\n".join(blocks))


def csv_to_text(raw: str) -> str:
    """One paragraph per row: `column: value` pairs joined by `; `."""
    try:
        dialect = csv.Sniffer().sniff(raw[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(raw), dialect))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    lines = [
        "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip())
        for row in body
    ]
    return _normalise("\n\n".join(line for line in lines if line))


def extract(data: bytes, content_type: str) -> tuple[str, str]:
    """(text, title) of a file's bytes; InvalidData for an unsupported type or a broken file."""
    if content_type == "application/pdf":
        return pdf_to_text(data)
    raw = decode_text(data)
    if content_type == "text/html":
        return html_to_text(raw)
    if content_type == "application/json":
        return json_to_text(raw), ""
    if content_type == "text/csv":
        return csv_to_text(raw), ""
    if content_type in ("text/plain", "text/markdown"):
        return _normalise(raw), ""
    raise InvalidData(f"cannot extract text from {content_type}: upload one of {SUPPORTED}")
