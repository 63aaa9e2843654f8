"""The one writer of ``benchmarks/results/``: a Markdown page and the JSON of its raw numbers.

A result is a *stem* (``results/segmentation_cpu``) with two files:

* ``<stem>.json``: ``{"machine": {...}, ...}``, the raw measurements, indented by 1 (re-rendered
  with ``--render`` where a benchmark has it, compared across runs);
* ``<stem>.md``: the tables. A hand-written ``## Reading ...`` section at the end of an existing
  page (conclusions, caveats about the machine's load) is kept when the tables are rewritten.

The benchmarks build the Markdown lines themselves (``tables.py`` of each); this module writes,
reads, and formats the cells they share.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.measure import GB

#: start of the hand-written section kept at the end of a page when its tables are rewritten
READING = re.compile(r"^## Reading\b", re.MULTILINE)


def path_of(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` (``.md`` or ``.json``), also when the stem's name holds a dot."""
    stem = Path(stem)
    return stem.with_name(stem.name + suffix)


def write_json(stem: Path, payload: dict) -> Path:
    """Write ``<stem>.json`` (indent 1, the format of the committed results); return its path."""
    path = path_of(stem, ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def read_json(stem: Path) -> dict:
    """The payload of ``<stem>.json``."""
    return json.loads(path_of(stem, ".json").read_text())


def hand_written_reading(text: str) -> str:
    """The ``## Reading ...`` section of a page and everything after it; ``""`` when absent."""
    found = READING.search(text)
    return text[found.start():] if found else ""


def write_markdown(stem: Path, lines: list[str], keep_reading: bool = True) -> Path:
    """Write ``<stem>.md`` from ``lines``; keep the old page's hand-written reading.

    Parameters
    ----------
    stem : path
        Result stem (no suffix).
    lines : list of str
        The page, one line each (joined with newlines, a final newline added).
    keep_reading : bool
        Append the ``## Reading`` section of the page being replaced, if it has one.
    """
    path = path_of(stem, ".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    previous = path.read_text() if keep_reading and path.is_file() else ""
    reading = hand_written_reading(previous)
    if reading:
        text += "\n" + reading
    path.write_text(text)
    return path


def write_report(stem: Path, lines: list[str], payload: dict | None,
                 keep_reading: bool = True) -> Path:
    """Write the pair: ``<stem>.json`` from ``payload`` (unless ``None``), then ``<stem>.md``.

    Returns
    -------
    pathlib.Path
        The Markdown page.
    """
    if payload is not None:
        write_json(stem, payload)
    return write_markdown(stem, lines, keep_reading=keep_reading)


# --------------------------------------------------------------------------------------------
# cells shared by the tables
# --------------------------------------------------------------------------------------------
def gb(value) -> str:
    """Bytes as GB with 2 decimals; ``-`` for ``None``."""
    return "-" if value is None else f"{value / GB:.2f}"


def seconds(value) -> str:
    """Seconds with 1 decimal; ``-`` for ``None``."""
    return "-" if value is None else f"{value:.1f}"


def rounded_load(values) -> tuple:
    """A load-average triple rounded to 2 decimals (as the pages print it)."""
    return tuple(round(v, 2) for v in values)
