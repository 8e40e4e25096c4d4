"""A located data problem, as every script reports it (see SKILL.md / data-prep.md).

Locations: ``line`` (1-based line in the file), ``message_index`` (0-based index in
``messages`` or None), ``path`` (JSON path inside the line, e.g.
``messages[2].tool_calls[0].function.arguments``), plus a stable snake_case ``code``, a
``message`` saying what is wrong and a ``hint`` saying how to fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass
class Finding:
    code: str
    message: str
    hint: str = ""
    line: int | None = None
    message_index: int | None = None
    path: str | None = None
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def location(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.path:
            parts.append(self.path)
        return ", ".join(parts) or "-"

    def one_line(self) -> str:
        hint = f" -> {self.hint}" if self.hint else ""
        return f"{self.location()}: [{self.code}] {self.message}{hint}"
