"""What every wizard screen shares: header, footer, error panel, Esc = back, guarded handlers."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Static

from ..widgets.panels import ErrorPanel, Guarded


class WizardScreen(Guarded, Screen):
    """A step of the wizard.  Subclasses implement ``body()`` and may override ``go_back()``."""

    BINDINGS = [Binding("escape", "back", "Back")]
    HEADING = ""
    HELP = ""  # what this screen is for, shown by `?`

    def compose(self):
        yield Header(show_clock=False, icon="")
        yield Static(self.heading(), classes="screen-title", id="screen-title")
        yield from self.body()
        yield ErrorPanel(id="error-panel")
        yield Footer()

    def heading(self) -> str:
        return self.HEADING

    def body(self):
        return iter(())

    def show_error(self, message: str, log_path: str | None = None) -> bool:
        """Show the error in this screen's panel; False when the screen has none (yet)."""
        panels = self.query(ErrorPanel)
        if not panels:
            return False
        panels.first().show_error(message, log_path)
        return True

    def clear_error(self) -> None:
        for panel in self.query(ErrorPanel):
            panel.clear()

    def action_back(self) -> None:
        self.go_back()

    def go_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # never pop the default screen
            self.app.pop_screen()


class WizardModal(Guarded, ModalScreen):
    BINDINGS = [Binding("escape", "dismiss_modal", "Close")]

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
