"""Small shared pieces: the error panel, guarded handlers, aligned key/value lines."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

from rich.markup import escape
from textual.message import Message
from textual.widgets import Static


@dataclass
class Failure(Message):
    """Something failed (a handler raised, a check in a worker): the app shows it in the
    current screen's panel and logs it."""

    text: str
    exc: BaseException


def guard(handler: Callable) -> Callable:
    """A message handler whose exception becomes a Failure message (panel and log)
    instead of ending the app."""
    if inspect.iscoroutinefunction(handler):
        @functools.wraps(handler)
        async def guarded_async(node, *args):
            try:
                return await handler(node, *args)
            except Exception as exc:  # noqa: BLE001 - any bug must land in the panel, not on the terminal
                node.post_message(Failure(f"{type(exc).__name__}: {exc}", exc))
        return guarded_async

    @functools.wraps(handler)
    def guarded(node, *args):
        try:
            return handler(node, *args)
        except Exception as exc:  # noqa: BLE001
            node.post_message(Failure(f"{type(exc).__name__}: {exc}", exc))
    return guarded


class Guarded:
    """Mixin: every ``on_*`` / ``watch_*`` handler a subclass defines is guarded (see guard)."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for name, value in list(vars(cls).items()):
            if name.startswith(("on_", "watch_")) and inspect.isfunction(value):
                setattr(cls, name, guard(value))


class ErrorPanel(Static):
    """Errors in plain words, in the screen (hidden while there is none).

    The full details (traceback) are in the log file whose path is shown.
    """

    DEFAULT_CLASSES = "error-panel"

    def on_mount(self) -> None:
        self.display = False

    def show_error(self, message: str, log_path: str | None = None) -> None:
        text = f"[b]Error:[/b] {escape(message)}"
        if log_path:
            text += f"\n[dim]details: {escape(log_path)}[/dim]"
        self.update(text)
        self.display = True

    def clear(self) -> None:
        self.update("")
        self.display = False


def kv_lines(pairs: list[tuple[str, object]], width: int = 14) -> str:
    """Aligned ``key  value`` lines (rich markup-escaped), skipping empty values."""
    out = []
    for k, v in pairs:
        if v in (None, "", [], ()):
            continue
        out.append(f"[b]{escape(k):<{width}}[/b] {escape(str(v))}")
    return "\n".join(out)
