"""Small shared pieces: the error panel, guarded handlers, aligned key/value lines."""

from __future__ import annotations

from rich.markup import escape
from textual.message import Message
from textual.widgets import Static


class Guarded:
    """Mixin: an exception in one of this node's message handlers goes to the error panel
    and the log instead of killing the node's message loop (and the app)."""

    async def _on_message(self, message: Message) -> None:
        try:
            await super()._on_message(message)
        except Exception as exc:  # noqa: BLE001 - any bug must land in the panel, not on the terminal
            self.app.report_error(f"{type(exc).__name__}: {exc}", exc)


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
