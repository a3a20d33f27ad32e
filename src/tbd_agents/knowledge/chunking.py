"""Structure-aware chunking with exact offsets.

The text is cut into blocks (headings and paragraphs); blocks are packed into chunks of about
`size` characters. A heading always starts a new chunk, so a chunk never straddles two sections;
a paragraph longer than `size` is cut at sentence ends (or, failing that, at spaces). Adjacent
chunks inside a section share up to `overlap` characters, cut at a word boundary. Every chunk is
`text[start:end]` of the input, so a citation's offsets point at the exact passage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6} .*|[^\n]+\n(=+|-+))$")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str


def _blocks(text: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_heading) of each paragraph or heading line, in order."""
    for para in re.finditer(r"\S(?:.*?\S)??(?=\n[ \t]*\n|\s*\Z)", text, flags=re.S):
        start = para.start()
        for line in re.finditer(r"[^\n]+", para.group()):
            if line.group().startswith("#") and _HEADING.match(line.group()):
                if line.start() > 0:
                    yield start, para.start() + line.start() - 1, False
                yield para.start() + line.start(), para.start() + line.end(), True
                start = para.start() + line.end() + 1
        if start < para.end():
            yield start, para.end(), False


def _split_long(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Cut text[start:end] into pieces of at most `size`, at sentence ends, else at spaces."""
    pieces: list[tuple[int, int]] = []
    while end - start > size:
        window = text[start : start + size]
        cuts = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > size // 3]
        if not cuts:
            cuts = [m.end() for m in re.finditer(r"\s+", window) if m.end() > size // 3]
        cut = start + (cuts[-1] if cuts else size)
        pieces.append((start, _rstrip(text, start, cut)))
        start = cut
    pieces.append((start, end))
    return pieces


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _overlap_start(text: str, start: int, end: int, overlap: int) -> int:
    """Where a chunk continuing after text[start:end] begins: ≤ overlap chars back, at a word."""
    if overlap <= 0:
        return end
    pos = max(start + 1, end - overlap)
    while pos < end and not text[pos - 1].isspace():
        pos += 1
    while pos < end and text[pos].isspace():
        pos += 1
    return pos if pos < end else end


def chunk_text(text: str, size: int = 1200, overlap: int = 150) -> list[Chunk]:
    """Chunks of `text` (see the module doc); empty text gives no chunks."""
    if size < 50:
        raise ValueError("chunk size must be at least 50 characters")
    overlap = max(0, min(overlap, size // 2))
    spans: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None  # the chunk being built
    for b_start, b_end, heading in _blocks(text):
        if heading and cur is not None:
            spans.append(cur)  # a heading starts a new chunk, without overlap
            cur = None
        if b_end - b_start > size:
            if cur is not None:
                spans.append(cur)
            pieces = _split_long(text, b_start, b_end, size)
            spans.extend(pieces[:-1])
            cur = pieces[-1]
        elif cur is None:
            cur = (b_start, b_end)
        elif b_end - cur[0] <= size:
            cur = (cur[0], b_end)
        else:
            spans.append(cur)
            ov = _overlap_start(text, cur[0], cur[1], overlap)
            cur = (ov if b_end - ov <= size else b_start, b_end)
    if cur is not None:
        spans.append(cur)
    return [Chunk(i, s, e, text[s:e]) for i, (s, e) in enumerate(spans) if text[s:e].strip()]
