"""The one error a bad playbook raises: it names the file and the key."""

from __future__ import annotations


class PlaybookError(ValueError):
    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}")
