"""BENCHMARKS.md's sections: each run writes its own and keeps everyone else's."""

from __future__ import annotations

from pathlib import Path


def write_section(report: Path, lines: list[str], heading: str) -> None:
    """Put ``lines`` (starting with ``heading``) into ``report`` in place of an older
    section of that heading, else before "## Targets", else at the end."""
    text = report.read_text() if report.exists() else "# Benchmarks\n"
    body = "\n".join(lines) + "\n"
    start = text.find(f"\n{heading}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + body + (text[end:] if end >= 0 else "")
    else:
        anchor = text.find("\n## Targets\n")
        if anchor >= 0:
            text = text[: anchor + 1] + body + "\n" + text[anchor + 1 :]
        else:
            text = text.rstrip("\n") + "\n\n" + body
    report.write_text(text)
