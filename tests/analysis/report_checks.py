"""Checks on a written report, shared by the synthetic and the real-sweep report tests.

Loaded by path from the tests (importlib import mode has no package to import from).
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from PIL import Image

MIN_PNG_BYTES = 10_000  # a labelled figure with data; an empty canvas is a few kB


def html_sections(text: str) -> dict[str, str]:
    """``{h3 heading: the HTML up to the next heading}``, for the first run's section."""
    parts = re.split(r"<h3>(.*?)</h3>", text.split("<h2>")[1])
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def html_table_rows(fragment: str) -> int:
    body = fragment.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr>")


def markdown_table_rows(text: str, heading: str) -> int:
    block = text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return len(lines) - 2  # header and alignment rows


def check_images(out: Path, html: str) -> list[str]:
    """Every image the HTML names exists, is a valid PNG of real size, and equals its embedded copy."""
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)" data-file="([^"]+)"', html)
    linked = re.findall(r'<a href="([^"]+\.png)">', html)
    names = [name for _, name in embedded]
    assert names and sorted(names) == sorted(linked), (names, linked)
    for data, name in embedded:
        path = out / name
        assert path.is_file(), f"{name} named in the HTML but not written"
        raw = path.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > MIN_PNG_BYTES, name
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
        with Image.open(io.BytesIO(raw)) as img:
            assert img.format == "PNG" and img.width > 500 and img.height > 300, (name, img.size)
        assert base64.b64decode(data) == raw, f"embedded copy of {name} differs from the file"
    return names
