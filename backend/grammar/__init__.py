"""Structured output: AI00 BNF and JSON schema -> one grammar form -> a per-session token mask."""

from __future__ import annotations


class GrammarError(ValueError):
    """A grammar or schema that cannot be used; `line`/`column` (1-based) point into BNF text when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.line, self.column = line, column
