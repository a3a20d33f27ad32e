"""Caveman compression: rule-based shortening of text injected into a run's system prompt.

A workflow with `caveman` on asks the model for terse answers and feeds it knowledge passages and
memories with the words that carry little meaning removed: articles, auxiliary verbs, intensifiers
and filler phrases ("it is important to note that", "in order to" → "to"). The rules are
deterministic and never touch what must survive verbatim:

- fenced code blocks (```…```) and inline code (`…`), kept character for character;
- URLs, file paths, numbers, identifiers (snake_case, camelCase, dotted names, ALLCAPS);
- our citation markers (`[1]`), Markdown headings (`#` lines) and XML-like tags (`<memory …>`);
- negations ("not", "no", "never"): dropping them would invert the meaning.

`compress(text)` returns the compressed text only when it is shorter; otherwise the original.
"""

from __future__ import annotations

import re

#: Words dropped wherever they stand alone (compared in lower case). Negations and words that
#: change meaning (quantifiers, modals) are deliberately absent.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "this",
        "that",
        "these",
        "those",
        "very",
        "really",
        "just",
        "basically",
        "actually",
        "simply",
        "quite",
        "rather",
        "somewhat",
        "literally",
        "essentially",
        "certainly",
        "definitely",
        "extremely",
        "totally",
        "fairly",
        "pretty",
        "kindly",
        "please",
        "also",
        "so",
    ]
)

#: Filler phrases → their short form (matched case-insensitively on word boundaries; longest
#: first so "it is important to note that" wins over "note that").
FILLERS: tuple[tuple[str, str], ...] = tuple(
    sorted(
        (
            ("it is important to note that", ""),
            ("it should be noted that", ""),
            ("it is worth noting that", ""),
            ("please note that", ""),
            ("note that", ""),
            ("in order to", "to"),
            ("due to the fact that", "because"),
            ("owing to the fact that", "because"),
            ("in the event that", "if"),
            ("at this point in time", "now"),
            ("at the present time", "now"),
            ("for the purpose of", "for"),
            ("with regard to", "about"),
            ("with respect to", "about"),
            ("in terms of", "in"),
            ("as well as", "and"),
            ("a large number of", "many"),
            ("is able to", "can"),
            ("are able to", "can"),
            ("in addition", "also"),
            ("as a matter of fact", ""),
            ("for example", "e.g."),
            ("that is to say", "i.e."),
        ),
        key=lambda pair: -len(pair[0]),
    )
)

_FENCE = re.compile(r"```.*?```", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_TAG = re.compile(r"</?[A-Za-z][^<>\n]*>")
_FILLER_RES = [
    (re.compile(r"(?<![\w/.-])" + re.escape(p) + r"(?![\w/-])", re.IGNORECASE), r)
    for p, r in FILLERS
]
_SPACES = re.compile(r"[ \t]{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
#: A placeholder for a protected span; \x00 never occurs in the text we compress.
_HOLE = "\x00{}\x00"
_HOLE_RE = re.compile("\x00(\\d+)\x00")


def _protect(text: str, keep: list[str]) -> str:
    def hold(m: re.Match[str]) -> str:
        keep.append(m.group(0))
        return _HOLE.format(len(keep) - 1)

    for pattern in (_FENCE, _INLINE_CODE, _TAG):
        text = pattern.sub(hold, text)
    return text


def _compress_line(line: str) -> str:
    stripped = line.lstrip()
    if not stripped or stripped.startswith("#"):  # headings stay as written
        return line
    indent = line[: len(line) - len(stripped)]
    for pattern, short in _FILLER_RES:
        stripped = pattern.sub(short, stripped)
    words = [w for w in stripped.split(" ") if w and w.lower() not in STOPWORDS]
    out = " ".join(words)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", out)).strip()
    return indent + out if out else ""


def compress(text: str) -> str:
    """`text` with stopwords and filler phrases removed (see the module docstring), or `text`
    itself when that is not shorter."""
    if not text:
        return text
    keep: list[str] = []
    held = _protect(text, keep)
    lines = [_compress_line(line) for line in held.split("\n")]
    # Collapse the blank lines a removed line leaves, keeping paragraph breaks single.
    out: list[str] = []
    for line in lines:
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    result = _HOLE_RE.sub(lambda m: keep[int(m.group(1))], "\n".join(out)).strip("\n")
    return result if len(result) < len(text) else text
