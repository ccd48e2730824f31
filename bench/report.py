"""Small helpers the benchmarks share: where results go, and how a benchmark's section of
docs/benchmarks.md is replaced without touching the other sections.

A section is the text between ``<!-- name:start -->`` and ``<!-- name:end -->``; a benchmark
that runs again rewrites only its own section (appended at the end the first time).
"""

from __future__ import annotations

import json
import platform
import re
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BENCHMARKS_DOC = ROOT / "docs" / "benchmarks.md"
DOC_HEADER = """# Benchmarks

Measured with the scripts in `bench/`; each script rewrites its own section below.
Raw results (JSON) go to `bench/results/`, which is not committed.
"""


def stop_cleanly_on_sigterm() -> None:
    """Make ``kill`` end a benchmark as Ctrl-C does: SystemExit unwinds its ``finally`` blocks and
    context managers, so the servers it started are stopped and its temporary registry removed,
    not left running and serving."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def write_json(name: str, payload: dict) -> Path:
    """Save ``payload`` (plus when and where it was measured) as bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    stamped = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), **payload}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {platform.system()}"


def replace_section(name: str, markdown: str, doc: Path = BENCHMARKS_DOC) -> None:
    """Put ``markdown`` between the ``name`` markers of ``doc`` (created if missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else DOC_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub table; ``align`` is one letter per column, ``l`` or ``r`` (default: left)."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *[[str(cell) for cell in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def text_table(header: list[str], rows: list[list]) -> str:
    """The same table for a terminal: columns padded to their widest cell."""
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
