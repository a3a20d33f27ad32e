"""The chat's Markdown renderer, run in the browser: HTML in a reply is shown as text, only
the renderer's own tags appear, and links go only to http(s)/mailto targets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.web.conftest import Dashboard

RENDER = """async (source) => {
  const m = await import('/dashboard/assets/js/markdown.js');
  const div = document.createElement('div');
  m.renderInto(div, source);
  const all = [...div.querySelectorAll('*')];
  return {
    html: div.innerHTML,
    text: div.textContent,
    tags: all.map((e) => e.tagName.toLowerCase()),
    handlers: all.flatMap((e) => [...e.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
    links: [...div.querySelectorAll('a')].map((a) => ({href: a.getAttribute('href'), rel: a.rel, text: a.textContent})),
  };
}"""

ALLOWED = {
    "p",
    "br",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "div",
}


@pytest.fixture(scope="module")
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """One page for the module: rendering needs no sign-in and no fresh state."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(dashboard.base + "/")
    yield page
    context.close()


@pytest.fixture
def render(page: Page):

    def run(source: str) -> dict[str, Any]:
        return page.evaluate(RENDER, source)

    return run


@pytest.mark.parametrize(
    "attack",
    [
        "<script>window.pwned = 1</script>",
        '<img src=x onerror="window.pwned=1">',
        "**<svg onload=alert(1)>**",
        "`<iframe src=javascript:alert(1)>`",
        "```\n<style>body{display:none}</style>\n```",
        '[click](https://example.com/" onmouseover="alert(1))',
        "> <a href=javascript:alert(1)>x</a>",
        "| a | b |\n|---|---|\n| <b onclick=x>1</b> | 2 |",
    ],
)
def test_html_in_a_reply_stays_text(render, page: Page, attack: str) -> None:
    out = render(attack)
    assert set(out["tags"]) <= ALLOWED
    assert out["handlers"] == []
    assert "<" in out["text"] or "&" in attack or "onmouseover" in attack
    assert page.evaluate("window.pwned") is None


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "vbscript:x",
        "//evil.example",
    ],
)
def test_unsafe_link_targets_are_not_links(render, url: str) -> None:
    out = render(f"[go]({url})")
    assert out["links"] == []
    assert out["text"].startswith("go")
    assert "javascript" not in out["html"].lower() or "href" not in out["html"]


def test_safe_links_open_without_referrer(render) -> None:
    out = render("see [the docs](https://example.com/a?b=1&c=2) or [mail](mailto:x@example.com)")
    assert out["links"] == [
        {"href": "https://example.com/a?b=1&c=2", "rel": "noopener noreferrer", "text": "the docs"},
        {"href": "mailto:x@example.com", "rel": "noopener noreferrer", "text": "mail"},
    ]


def test_markdown_structures(render) -> None:
    source = (
        "# Title\n\nSome **bold**, *italic*, ~~gone~~ and `x < y` code.\n\n"
        "- one\n- two\n  - nested\n\n1. first\n2. second\n\n"
        "```python\nif a < b:\n    print('**not bold**')\n```\n\n"
        "> quoted\n\n---\n\n| k | v |\n|---|---|\n| a | 1 |\n"
    )
    out = render(source)
    tags = out["tags"]
    for tag in (
        "h1",
        "strong",
        "em",
        "del",
        "code",
        "ul",
        "ol",
        "li",
        "pre",
        "blockquote",
        "hr",
        "table",
        "th",
        "td",
    ):
        assert tag in tags, tag
    assert tags.count("ul") == 2  # the nested list
    assert "if a < b:" in out["text"]
    assert "**not bold**" in out["text"]  # nothing is interpreted inside code blocks
    assert "x < y" in out["text"]


def test_an_unfinished_code_fence_while_streaming_renders(render) -> None:
    out = render("Here:\n```js\nconst a = 1;")
    assert "pre" in out["tags"]
    assert "const a = 1;" in out["text"]


def test_nul_characters_cannot_forge_code_placeholders(render) -> None:
    out = render("a \u00000\u0000 b `c`")
    assert "undefined" not in out["text"]
    assert out["tags"].count("code") == 1
