"""Extraction of each supported format and structure-aware chunking with exact offsets."""

from __future__ import annotations

import itertools
import json

import pytest

from tbd_agents.errors import InvalidData
from tbd_agents.knowledge.chunking import chunk_text
from tbd_agents.knowledge.extract import content_type_of, extract
from tests.support.pdf import make_pdf

MARKDOWN = """# Handbook

Welcome to the team. This handbook explains how we work.

## Holidays

Every employee gets 27 days of paid holiday per year. Unused days expire in March.

## Expenses

Submit receipts within 30 days. Travel must be booked through the portal.
"""


def test_chunks_are_exact_spans_that_start_at_headings() -> None:
    chunks = chunk_text(MARKDOWN, size=120, overlap=20)
    for c in chunks:
        assert MARKDOWN[c.start : c.end] == c.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    heads = [c.text.splitlines()[0] for c in chunks]
    assert "## Holidays" in heads
    assert "## Expenses" in heads
    holiday = next(c for c in chunks if c.text.startswith("## Holidays"))
    assert "27 days" in holiday.text
    assert "Expenses" not in holiday.text  # never straddles two sections


def test_long_sections_split_at_sentences_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(60)]
    text = "# Long\n\n" + "\n\n".join(" ".join(sentences[i : i + 3]) for i in range(0, 60, 3))
    chunks = chunk_text(text, size=300, overlap=80)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text) <= 300
    body = [c for c in chunks if not c.text.startswith("# Long")]
    overlapping = sum(1 for a, b in itertools.pairwise(body) if b.start < a.end)
    assert overlapping >= len(body) // 2
    # one paragraph longer than the size is cut at sentence ends
    para = " ".join(sentences)
    pieces = chunk_text(para, size=200, overlap=0)
    assert all(p.text.endswith(".") for p in pieces)
    assert "".join(p.text + " " for p in pieces).split() == para.split()


def test_chunking_edge_cases() -> None:
    assert chunk_text("", 100) == []
    assert chunk_text("   \n\n  ", 100) == []
    (only,) = chunk_text("short text", 100)
    assert (only.start, only.end) == (0, 10)
    with pytest.raises(ValueError, match="at least 50"):
        chunk_text("x", 10)


def test_extract_each_format() -> None:
    html = (
        "<html><head><title>Policies</title><style>p{}</style></head><body>"
        "<h1>Refunds</h1><p>Refunds take <b>5 days</b>.</p><script>x()</script>"
        "<h2>Returns</h2><p>Returns need a receipt.</p></body></html>"
    )
    text, title = extract(html.encode(), "text/html")
    assert title == "Policies"
    assert text == "# Refunds\n\nRefunds take 5 days.\n\n## Returns\n\nReturns need a receipt."
    pdf = make_pdf([["Alpha beta gamma."], ["Delta epsilon."]], title="Greek")
    text, title = extract(pdf, "application/pdf")
    assert (text, title) == ("Alpha beta gamma.\n\nDelta epsilon.", "Greek")
    data = json.dumps([{"name": "Ada", "langs": ["en", "fr"]}, {"name": "Bo", "age": 3}])
    text, _ = extract(data.encode(), "application/json")
    assert text == "name: Ada\nlangs[0]: en\nlangs[1]: fr\n\nname: Bo\nage: 3"
    text, _ = extract(b"city,country\nParis,France\nLyon,\n", "text/csv")
    assert text == "city: Paris; country: France\n\ncity: Lyon"
    text, _ = extract("caf\u00e9\r\nline".encode("cp1252"), "text/plain")
    assert text == "caf\u00e9\nline"


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(InvalidData, match="upload one of"):
        content_type_of("slides.pptx")
    assert content_type_of("x.MD") == "text/markdown"
    assert content_type_of("x.bin", "text/csv; charset=utf-8") == "text/csv"
    with pytest.raises(InvalidData, match="valid PDF"):
        extract(b"%PDF-1.4 broken", "application/pdf")
    with pytest.raises(InvalidData, match="not valid JSON"):
        extract(b"{", "application/json")
    with pytest.raises(InvalidData, match="cannot extract text from image/png"):
        extract(b"\x89PNG", "image/png")
