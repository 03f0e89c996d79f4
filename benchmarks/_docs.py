"""Writing a benchmark's section into docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (or append it), leaving the others alone."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading in doc:
        head, _, rest = doc.partition(heading)
        tail = rest.split("\n## ", 1)
        doc = head + text + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)


def measured(details: str, command: str) -> list[str]:
    """The closing lines of a section: when and on what it was measured (``details`` appended, e.g.
    "; the run took 3.1 min"), and the command that reproduces it (``benchmarks/...py ARGS``)."""
    import datetime
    import os

    import torch

    return [
        f"Measured {datetime.date.today()} on {os.cpu_count()} CPU cores, torch {torch.__version__}"
        f"{details}. Reproduce with:",
        "",
        "```bash",
        f"python {command} --write docs/benchmarks.md",
        "```",
        "",
    ]


SUMMARY_START = "<!-- summary: one row per benchmark, written by the benchmarks -->"
SUMMARY_END = "<!-- /summary -->"


def write_row(path: Path, key: str, compared: str, result: str, command: str) -> None:
    """Set the row ``key`` (e.g. "B1") of the summary table at the top of ``path``."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    rows: dict[str, str] = {}
    if SUMMARY_START in doc:
        head, _, rest = doc.partition(SUMMARY_START)
        table, _, tail = rest.partition(SUMMARY_END)
        for line in table.splitlines():
            cells = line.split("|")
            if len(cells) > 2 and cells[1].strip() not in ("", "---"):
                rows[cells[1].strip()] = line
    else:
        title, _, body = doc.partition("\n")
        head, tail = title + "\n\n", "\n\n" + body.lstrip("\n")
    rows[key] = f"| {key} | {compared} | {result} | `python {command}` |"
    table = "\n".join(
        [
            SUMMARY_START,
            "| | compared | result, as measured | reproduce |",
            "|---|---|---|---|",
            *(rows[k] for k in sorted(rows)),
            SUMMARY_END,
        ]
    )
    path.write_text(head + table + tail)
