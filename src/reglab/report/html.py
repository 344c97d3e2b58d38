"""HTML page assembly: one self-contained page (inline CSS, figures as base64 PNG data URIs,
no JavaScript, no external resources)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --rule: #d0d4da; --band: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 "DejaVu Serif", Georgia, "Times New Roman", serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 64px; }
h1, h2, h3, nav, table, figcaption, .note, .meta { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p { margin: 8px 0; }
.meta { color: var(--muted); font-size: 13px; margin-bottom: 16px; }
nav { font-size: 13px; background: var(--band); padding: 8px 12px; border-radius: 4px; }
nav a { margin-right: 14px; color: #1a56a8; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 14px; }
th, td { padding: 4px 10px; text-align: left; vertical-align: top; border-bottom: 1px solid #e6e8eb; }
thead th { border-bottom: 1.5px solid #6b7280; background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: bold; }
tbody td:first-child { min-width: 10em; }
tr.diverged td { background: #fff4f2; }
.flag { color: #b3261e; font-weight: bold; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
code, .kv { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.setting { white-space: nowrap; }
.kv { display: inline-block; margin: 0 10px 2px 0; white-space: nowrap; }
.kv b { font-weight: normal; color: var(--muted); }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: #333; margin-top: 6px; line-height: 1.45; }
figcaption b { color: var(--fg); }
.note { font-size: 13px; color: var(--muted); background: var(--band); border-left: 3px solid var(--rule);
        padding: 6px 10px; }
.scroll { overflow-x: auto; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); column-gap: 28px; }
.grid2 figure { margin: 10px 0 18px; }
"""


def e(x: object) -> str:
    return escape(str(x), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def setting(color: Sequence[float], label: str) -> str:
    """A setting's swatch and label, kept on one line (a label broken mid-setting reads as two)."""
    return f'<span class="setting">{swatch(color)}{e(label)}</span>'


def swatch(color: Sequence[float]) -> str:
    r, g, b = (round(255 * c) for c in color[:3])
    return f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>'


Cell = str | tuple[str, str]
"""A table cell: its HTML, or (HTML, an extra class for the cell)."""


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    num_cols: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
    cls: str = "",
) -> str:
    """A table from already-escaped cell HTML."""
    num = set(num_cols)
    head = "".join(f'<th class="num">{h}</th>' if i in num else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for j, row in enumerate(rows):
        rc = f' class="{row_classes[j]}"' if row_classes and row_classes[j] else ""
        cells = []
        for i, c in enumerate(row):
            classes = []
            if i in num:
                classes.append("num")
            if isinstance(c, tuple):  # (html, extra class)
                c, extra = c
                classes.append(extra)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{c}</td>")
        body.append(f"<tr{rc}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(number: int, fig_id: str, title: str, caption: str, png: bytes) -> str:
    return (
        f'<figure id="{e(fig_id)}"><img src="{data_uri(png)}" alt="{e(title)}">'
        f"<figcaption><b>Figure {number}. {e(title)}.</b> {e(caption)}</figcaption></figure>"
    )


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def section(sec_id: str, title: str, body: str) -> str:
    return f'<section id="{e(sec_id)}"><h2>{e(title)}</h2>{body}</section>'


def page(title: str, meta: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{e(i)}">{e(t)}</a>' for i, t in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>"
        f'<body><main><h1>{e(title)}</h1><div class="meta">{meta}</div><nav>{links}</nav>{body}</main></body></html>\n'
    )
