"""The report's page: `Section`s (a title, text, a table, a figure, a list), each rendered once to markdown (user
text escaped) and through a jinja2 page to HTML, with the legend and the line that dates the page."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2

import mbbench
from mbbench.environment import git_commit
from mbbench.files import write_text
from mbbench.hardware.perfmodel import MODEL_VERSION

MARKDOWN_SPECIAL = re.compile(r"([\\`*_|<>])")


def markdown_text(text: object) -> str:
    """A cell as markdown: characters markdown would read as syntax (`|` splits a row, `*` and `_` emphasise)
    escaped; our own marks (`tables.Emphasis`) added around the escaped text."""
    escaped = MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
    style = getattr(text, "style", None)
    return f"**{escaped}**" if style == "b" else (f"_{escaped}_" if style == "i" else escaped)


def html_text(text: object) -> str:
    escaped = html.escape(str(text))
    style = getattr(text, "style", None)
    return f"<{style}>{escaped}</{style}>" if style else escaped


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(markdown_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@dataclass
class Section:
    """One part of the report, built once and rendered to markdown and HTML alike."""

    title: str
    text: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    image: Path | None = None
    items: list[str] = field(default_factory=list)
    folded: bool = False  # HTML: the table folded under its title (long reference material)

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        parts += [self.text, ""] if self.text else []
        parts += [markdown_table(*self.table), ""] if self.table else []
        parts += [f"![{self.title}]({self.image.name})", ""] if self.image else []
        parts += [*(f"- {item}" for item in self.items), ""] if self.items else []
        return "\n".join(parts)

    def html(self) -> str:
        parts = [f"<h2>{html.escape(self.title)}</h2>"]
        parts += [f"<p>{html.escape(self.text)}</p>"] if self.text else []
        table = html_table(*self.table) if self.table else ""
        parts += [f"<details><summary>{len(self.table[1])} rows</summary>{table}</details>" if self.folded else table]
        parts += [f"<img alt='{html.escape(self.title)}' src='{embed(self.image)}'>"] if self.image else []
        parts += ["<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in self.items) + "</ul>"] if self.items else []
        return "".join(parts)


PAGE = jinja2.Template("""<!doctype html><html><head><meta charset='utf-8'><title>mbbench report</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #999;padding:2px 6px;font-size:13px}img{max-width:100%}</style>
<script>window.addEventListener('load',()=>{for(const i of document.images){
i.setAttribute('data-loaded',String(i.complete&&i.naturalWidth>0));}document.body.setAttribute('data-ready','1');});
</script></head><body><h1>mbbench report</h1><p>{{ intro }}</p>
{% for section in sections %}{{ section.html() }}
{% endfor %}</body></html>
""")

LEGEND = ("Throughput in thousands of tokens/s (k tok/s) of real tokens, three significant figures; max batch in "
          "documents (or tokens, for a packed budget). Measured cells give (±half the IQR over the median of "
          "per-pass tokens/s, passes, and 'busy' or 'unstable' where the record says so); predicted cells "
          "(p: low–high) the band of past errors for that GPU's architecture and stack, which contains the "
          "prediction (past predictions were off by that much; 'band too thin' where too few rows exist), and "
          "'would not fit' where the batch exceeds the predicted maximum. '–' unsupported, blank "
          "missing; **bold** best measured and _italic_ best predicted per column among rows of one device, "
          "protocol and dtype. '≥ N (capped ...)': a max-batch search stopped by its trial or time cap (a lower "
          "bound, never "
          "ranked best); 'n/a (... was nan)': a value that was not finite.")


def generated_line(when: datetime | None = None) -> str:
    """'Generated 2026-12-01 by mbbench 0.1.0 (commit 9465c10), performance model perfmodel-3.' The date is
    today's in UTC, or SOURCE_DATE_EPOCH's when set (reproducible builds)."""
    epoch = os.getenv("SOURCE_DATE_EPOCH")
    when = when or (datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc))
    commit = git_commit()
    return (f"Generated {when:%Y-%m-%d} by mbbench {mbbench.__version__} (commit {commit[:12] if commit else 'unknown'}"
            f"{', uncommitted changes' if commit and commit.endswith('-dirty') else ''}), "
            f"performance model {MODEL_VERSION}.")


def write_pages(out: Path, intro: str, sections: list[Section]) -> None:
    """report.md and index.html in `out`: both rendered before either is written, and each replaces the old one
    whole (UTF-8, any locale)."""
    markdown = "\n".join(["# mbbench report", "", intro, "", *(s.markdown() for s in sections)])
    intro_html = html.escape(intro).replace("**bold**", "<b>bold</b>").replace("_italic_", "<i>italic</i>")
    page = PAGE.render(intro=intro_html, sections=sections)
    write_text(out / "report.md", markdown)
    write_text(out / "index.html", page)
