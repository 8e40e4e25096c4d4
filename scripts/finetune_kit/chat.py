"""The one chat-format model of the skill (OpenAI-style chat fine-tuning JSONL).

Every script that reads or writes training data goes through this module: the pydantic
models below are the canonical shape, and :func:`check_record` is the single place where a
raw JSON line is parsed into them with located findings (see ``findings.Finding``).

Line formats
- chat: ``{"messages": [...], "tools": [...]?, "parallel_tool_calls": bool?, "metadata": {...}?}``
- prompt-completion: ``{"prompt": str, "completion": str}``
- preference (DPO): ``{"input": {"messages": [...], "tools"?}, "preferred_output": [assistant msg],
  "non_preferred_output": [assistant msg]}``

``metadata`` is this skill's provenance convention (source, tags, group, synthetic, ...);
it is allowed on every line and stripped by :func:`for_upload` before a provider sees it.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from .findings import Finding

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
FORMATS = ("chat", "prompt-completion", "preference")
METADATA_KEY = "metadata"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON string that decodes to an object


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def parsed_arguments(self) -> Any:
        return json.loads(self.function.arguments)


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    weight: Optional[Literal[0, 1]] = None
    # legacy OpenAI function calling (assistant ``function_call``) is normalised to tool_calls
    # by prepare_data; it is not part of the canonical model.

    def text(self) -> str:
        return content_text(self.content)


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatExample(_Strict):
    messages: list[Message] = Field(min_length=1)
    tools: Optional[list[Tool]] = None
    parallel_tool_calls: Optional[bool] = None
    metadata: Optional[dict[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m.role == "assistant"]

    def system_prompt(self) -> str | None:
        for m in self.messages:
            if m.role in ("system", "developer"):
                return m.text()
        return None


class PromptCompletion(_Strict):
    prompt: str
    completion: str
    metadata: Optional[dict[str, Any]] = None

    def to_chat(self) -> ChatExample:
        return ChatExample(messages=[Message(role="user", content=self.prompt),
                                     Message(role="assistant", content=self.completion)],
                           metadata=self.metadata)


class PreferenceInput(_Strict):
    messages: list[Message] = Field(min_length=1)
    tools: Optional[list[Tool]] = None
    parallel_tool_calls: Optional[bool] = None


class PreferenceExample(_Strict):
    input: PreferenceInput
    preferred_output: list[Message] = Field(min_length=1)
    non_preferred_output: list[Message] = Field(min_length=1)
    metadata: Optional[dict[str, Any]] = None

    def to_chat(self) -> ChatExample:
        """The SFT view of a preference line: the prompt followed by the preferred answer."""
        return ChatExample(messages=list(self.input.messages) + list(self.preferred_output),
                           tools=self.input.tools, metadata=self.metadata)


Example = Union[ChatExample, PromptCompletion, PreferenceExample]


def content_text(content: Any) -> str:
    """Plain text of a message content (string or list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, TextPart):
            parts.append(p.text)
        elif isinstance(p, dict) and isinstance(p.get("text"), str):
            parts.append(p["text"])
    return "".join(parts)


def detect_format(obj: Any) -> str | None:
    """Which line format a parsed JSON object is, or None when it is none of them."""
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "chat"
    if "preferred_output" in obj or "non_preferred_output" in obj or "input" in obj:
        return "preference"
    if "prompt" in obj or "completion" in obj:
        return "prompt-completion"
    return None


def as_chat(example: Example) -> ChatExample:
    """Any supported line as a chat example (prompt-completion and preference converted)."""
    if isinstance(example, ChatExample):
        return example
    return example.to_chat()


def for_upload(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a line without this skill's ``metadata`` key (providers reject unknown keys)."""
    return {k: v for k, v in obj.items() if k != METADATA_KEY}


def parse_example(obj: Any, fmt: str | None = None) -> Example:
    """Parse a well-formed line into its model (raises ``pydantic.ValidationError`` otherwise).

    Use :func:`check_record` to get every problem of a line with its location.
    """
    fmt = fmt or detect_format(obj)
    if fmt == "chat":
        return ChatExample.model_validate(obj)
    if fmt == "prompt-completion":
        return PromptCompletion.model_validate(obj)
    if fmt == "preference":
        return PreferenceExample.model_validate(obj)
    raise ValueError("not a chat, prompt-completion or preference line")


def check_record(obj: Any, fmt: str, line: int | None = None) -> tuple[Example | None, list[Finding]]:
    """Parse one JSON line of format ``fmt`` and return (model or None, located findings).

    This is the single parser of the chat format: the validator, prepare_data, the PII
    scanner and training all call it. Line-local checks live here; checks across lines
    (duplicates, leakage, differing system prompts, counts) live in ``validate``.
    """
    from .checks import check_line  # the detailed checks

    return check_line(obj, fmt, line)
