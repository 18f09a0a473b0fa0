"""What the ``fastrpc`` command draws on a terminal: tables, a view refreshed
in place, and progress bars.

With ``rich`` installed (``pip install fastrpc[cli]``) and a terminal on the
other end, rich draws them. Piped into a file or another program, or without
rich, the same content goes out as plain aligned text, one line per row, which
``grep`` and ``awk`` read (and ``--json`` is there for programs). ``styled``
forces one or the other.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def use_rich(out: TextIO, styled: bool | None = None) -> bool:
    """``styled`` if given, else whether rich is installed and ``out`` is a terminal."""
    if styled is not None:
        return styled and rich_available()
    return bool(getattr(out, "isatty", lambda: False)()) and rich_available()


def _cells(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[list[str]]:
    return [["-" if row.get(key) is None else str(row[key]) for key in keys] for row in rows]


def _headers(keys: Sequence[str], names: Mapping[str, str] | None = None) -> list[str]:
    """``names[key]`` where given, else the key in title case."""
    names = names or {}
    return [names.get(key) or key.replace("_", " ").title() for key in keys]


def plain_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], right: Sequence[str] = (),
                headers: Mapping[str, str] | None = None) -> str:
    """Rows as aligned columns under their headers; None shows as '-'."""
    titles = _headers(keys, headers)
    cells = _cells(rows, keys)
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(titles)]
    lines = []
    for line in [titles, *cells]:
        parts = [cell.rjust(width) if key in right else cell.ljust(width)
                 for cell, width, key in zip(line, widths, keys, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], right: Sequence[str] = (),
               title: str | None = None, headers: Mapping[str, str] | None = None) -> Any:
    from rich import box
    from rich.table import Table

    # Cells fold instead of being cut: a delete command must stay whole.
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for key, header in zip(keys, _headers(keys, headers), strict=True):
        table.add_column(header, justify="right" if key in right else "left", overflow="fold")
    for line in _cells(rows, keys):
        table.add_row(*line)
    return table


def _console(out: TextIO) -> Any:
    from rich.console import Console

    return Console(file=out, highlight=False, soft_wrap=False)


def render_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], out: TextIO | None = None, *,
                 right: Sequence[str] = (), title: str | None = None, styled: bool | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
    """Print ``rows`` (dicts) as a table of the columns ``keys``; ``headers``
    names columns whose title is not their key in title case."""
    out = out or sys.stdout
    if use_rich(out, styled):
        _console(out).print(rich_table(rows, keys, right, title, headers))
        return
    if title:
        out.write(title + "\n")
    out.write(plain_table(rows, keys, right, headers))


class LiveView:
    """A view that replaces itself on each ``show``: rich's live display on a
    terminal, else each look printed after the last (a log of looks)."""

    def __init__(self, out: TextIO | None = None, styled: bool | None = None) -> None:
        self.out = out or sys.stdout
        self._rich = use_rich(self.out, styled)
        self._live: Any = None

    def __enter__(self) -> LiveView:
        if self._rich:
            from rich.live import Live

            self._live = Live(console=_console(self.out), auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def show(self, heading: str, rows: Sequence[dict[str, Any]], keys: Sequence[str],
             footer: Sequence[str] = (), empty: str = "") -> None:
        if self._live is not None:
            from rich.console import Group
            from rich.text import Text

            parts: list[Any] = [Text(heading, style="bold")]
            parts.append(rich_table(rows, keys) if rows else Text(empty))
            parts.extend(Text(line) for line in footer)
            self._live.update(Group(*parts), refresh=True)
            return
        text = heading + "\n" + (plain_table(rows, keys) if rows else empty + "\n")
        text += "".join(line + "\n" for line in footer)
        self.out.write(text)
        self.out.flush()


class Progress:
    """A progress bar for a phase of known length in seconds, with a count and
    its rate: rich's on a terminal, else one line when the phase ends. Use it
    as a context manager, so that a phase that fails stops the bar too."""

    def __init__(self, label: str, seconds: float, stream: TextIO | None = None,
                 styled: bool | None = None) -> None:
        self.label = label
        self.seconds = seconds
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._bar: Any = None
        if use_rich(self.stream, styled):
            from rich.progress import BarColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description:<16}"), BarColumn(),
                                     TextColumn("{task.fields[count]:>9,d}  {task.fields[rate]:>9,.0f}/s"),
                                     console=_console(self.stream), transient=False)
            self._task = self._bar.add_task(label, total=seconds or 1.0, count=0, rate=0.0)
            self._bar.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops a rich bar that ``done`` did not (a phase that failed): its
        display restored, nothing more printed."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _rate(self, count: int) -> tuple[float, float]:
        elapsed = time.monotonic() - self.start
        return elapsed, (count / elapsed if elapsed > 0 else 0.0)

    def update(self, count: int, force: bool = False) -> None:
        if self._bar is None:
            return  # plain: one line at the end, nothing to redraw in a log
        elapsed, rate = self._rate(count)
        self._bar.update(self._task, completed=min(elapsed, self.seconds or 1.0), count=count, rate=rate)

    def done(self, count: int) -> None:
        elapsed, rate = self._rate(count)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.seconds or 1.0, count=count, rate=rate)
            self._bar.stop()
            self._bar = None
            return
        self.stream.write(f"{self.label:<16} {count:>9,d}  {rate:>9,.0f}/s\n")
        self.stream.flush()
