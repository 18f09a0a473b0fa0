"""The command line's tables, live view and progress bars: drawn by rich when
asked (a terminal), plain aligned text otherwise."""

from __future__ import annotations

import io

from fastrpc.console import LiveView, Progress, plain_table, render_table, rich_available

ROWS = [{"check": "zombie-queue", "subject": "'/' reply_" + "a" * 32, "fix": None},
        {"check": "backlog", "subject": "'/' work", "fix": "rabbitmqadmin delete queue name=" + "w" * 90}]
KEYS = ("check", "subject", "fix")


def test_rich_is_installed_for_the_tests() -> None:
    assert rich_available(), "rich is in the test extra (pip install fastrpc[cli])"


def test_plain_table_aligns_columns_and_shows_none_as_dash() -> None:
    lines = plain_table(ROWS, KEYS, right=()).splitlines()
    assert lines[0].split() == ["Check", "Subject", "Fix"]
    assert lines[1].startswith("zombie-queue  '/' reply_") and lines[1].endswith("-")
    assert lines[2].index("'/' work") == lines[1].index("'/' reply_")  # one column, one start


def test_piped_output_is_plain_and_a_terminal_gets_rich() -> None:
    out = io.StringIO()
    render_table(ROWS, KEYS, out)  # a StringIO is not a terminal
    assert out.getvalue() == plain_table(ROWS, KEYS)
    styled = io.StringIO()
    render_table(ROWS, KEYS, styled, styled=True, title="findings")
    text = styled.getvalue()
    assert text != out.getvalue() and "findings" in text and "Subject" in text
    # Long cells fold onto more lines; nothing is cut short with an ellipsis.
    assert "…" not in text and "".join(text.split()).count("w" * 90) == 1


def test_live_view_plain_prints_each_look_and_rich_draws_the_last() -> None:
    out = io.StringIO()
    with LiveView(out) as view:
        view.show("look 1", [], KEYS, empty="healthy")
        view.show("look 2", ROWS[:1], KEYS, footer=["gone: x"])
    text = out.getvalue()
    assert text.index("look 1") < text.index("healthy") < text.index("look 2") < text.index("gone: x")
    drawn = io.StringIO()
    with LiveView(drawn, styled=True) as view:
        view.show("look 1", [], KEYS, empty="healthy")
        view.show("look 2", ROWS[:1], KEYS, footer=["gone: x"])
    assert "look 2" in drawn.getvalue() and "zombie-queue" in drawn.getvalue()


def test_progress_plain_is_one_line_with_count_and_rate() -> None:
    out = io.StringIO()
    progress = Progress("calls", 1.0, out)
    progress.update(10)
    assert out.getvalue() == ""
    progress.done(1234)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("calls") and "1,234" in line and line.endswith("/s")
    drawn = io.StringIO()
    bar = Progress("calls", 1.0, drawn, styled=True)
    bar.update(5)
    bar.done(1234)
    assert "calls" in drawn.getvalue() and "1,234" in drawn.getvalue()
