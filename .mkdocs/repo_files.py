"""mkdocs hook: repository files that the pages link to become part of the site.

The pages live in docs/ and link to the committed evidence as the repository lays it out
(`../results/cifar-cpu/REPORT.md`), so that the links work on the forge. Here every such
target outside docs/ (and, for a markdown file, whatever it links to in turn: a report's
figures) is added to the site under its repository path, and the links are rewritten to it.
A link to a repository file that does not exist stays as it is, so `mkdocs build --strict`
reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

# ](target) of a markdown link or image, the target without a title or an anchor.
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(#[^)\s]*)?\)")
_added: dict[str, str] = {}  # repository path -> its src_uri in the site


def _repo(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _targets(text: str, base: str, repo: Path) -> list[str]:
    """Repository paths of the existing files that `text` (a file at repository path
    `base`) links to relatively."""
    out = []
    for target, _ in LINK.findall(text):
        path = posixpath.normpath(posixpath.join(posixpath.dirname(base), target))
        if not path.startswith("..") and (repo / path).is_file():
            out.append(path)
    return out


def on_files(files: Files, config: Any) -> Files:
    repo = _repo(config)
    docs = Path(config["docs_dir"]).resolve().relative_to(repo).as_posix()
    queue = [
        (f"{docs}/{f.src_uri}", Path(f.abs_src_path).read_text())
        for f in files.documentation_pages()
        if f.abs_src_path
    ]
    _added.clear()
    while queue:
        base, text = queue.pop()
        for path in _targets(text, base, repo):
            if path.startswith(f"{docs}/") or path in _added:
                continue
            file = File(
                path,
                src_dir=str(repo),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
                inclusion=InclusionLevel.NOT_IN_NAV,
            )
            files.append(file)
            _added[path] = file.src_uri
            if path.endswith(".md"):
                queue.append((path, (repo / path).read_text()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Links from a docs page to an added file point at the file's place in the site."""
    repo = _repo(config)
    docs = Path(config["docs_dir"]).resolve().relative_to(repo).as_posix()
    src = page.file.src_uri
    base = src if src in _added.values() else f"{docs}/{src}"

    def rewrite(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        path = posixpath.normpath(posixpath.join(posixpath.dirname(base), target))
        if path not in _added:
            return match.group(0)
        new = posixpath.relpath(_added[path], posixpath.dirname(src) or ".")
        return f"]({new}{anchor})"

    return LINK.sub(rewrite, markdown)
