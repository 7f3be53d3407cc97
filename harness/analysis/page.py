"""The HTML report as one self-contained page: a document with its own style sheet and its
figures inline (base64 PNG), so the file alone can be mailed, archived or opened offline.

The body comes from harness.analysis.render.Doc (already escaped); every name this module
puts into markup itself (the title, a figure's name) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from harness.errors import printable

# Plain CSS, no fonts or scripts fetched: the page renders the same offline.
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem auto; max-width: 84rem; padding: 0 1.5rem; color: #1f2328;
       line-height: 1.45; background: #fff; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
p, li { max-width: 60rem; }
.table-wrap { overflow-x: auto; margin: .8rem 0 1.2rem; }
table { border-collapse: collapse; font-size: .86rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; white-space: nowrap; }
th { background: #f0f3f6; text-align: left; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #f8f9fb; }
tbody tr:hover { background: #eef4ff; }
figure { display: inline-block; margin: .6rem 1rem 1rem 0; vertical-align: top;
         max-width: 36rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: .8rem; color: #57606a; }
""".strip()


def page(title: str, body: str) -> str:
    """`body` (escaped HTML) as a whole document titled `title` (plain text, shown printable:
    a suite name from someone else's rows never puts a control character in the page)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(printable(title))}</title>\n<style>\n{STYLE}\n</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def wrap_table(table_html: str) -> str:
    """A table in a scrolling box, so a wide one does not widen the page."""
    return f'<div class="table-wrap">\n{table_html}\n</div>'


def inline_figure(path: Path) -> str:
    """A PNG file as an <img> whose data is in the page, captioned with the file's stem."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
        f"<figcaption>{name}</figcaption></figure>"
    )
