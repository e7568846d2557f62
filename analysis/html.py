"""``report.md`` as one self-contained HTML page: Python-Markdown renders it, every local image is embedded as a
``data:`` URI, so the page opens anywhere (a mail attachment, an MLflow artifact view) with nothing beside it."""

from __future__ import annotations

import base64
import mimetypes
from html import escape
from pathlib import Path

import markdown
from markdown.treeprocessors import Treeprocessor

STYLE = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
         "table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
         "th{background:#f4f4f4}img{max-width:100%}code{background:#f4f4f4;padding:0 .2rem}")


class _EmbedImages(Treeprocessor):
    def __init__(self, md, folder: Path):
        super().__init__(md)
        self.folder = folder

    def run(self, root):
        for img in root.iter("img"):
            path = self.folder / img.get("src", "")
            if path.is_file():
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                img.set("src", f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}")


def write(source: str | Path, out: str | Path, *, title: str = "") -> Path:
    """Render the Markdown file ``source`` (tables included) to ``out``, images embedded; returns ``out``."""
    source, out = Path(source), Path(out)
    md = markdown.Markdown(extensions=["tables"])
    md.treeprocessors.register(_EmbedImages(md, source.parent), "embed_images", 0)
    body = md.convert(source.read_text())
    out.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
                   f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
    return out


__all__ = ["write"]
