"""Anthropic Messages request bodies (what coding agents send)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from executor.api.schemas import MAX_MESSAGES, MAX_STOPS, MAX_TOOLS, Body, Name, Stop, Text, Tokens


class TextBlock(Body):
    type: Literal["text"]
    text: Text


class ToolUseBlock(Body):
    type: Literal["tool_use"]
    id: Name
    name: Name
    input: dict[str, JsonValue] = Field(default_factory=dict)


class ToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: Name
    content: Text | Annotated[list[TextBlock], Field(max_length=MAX_MESSAGES)] = ""
    is_error: bool = False

    def text(self) -> str:
        return (
            self.content if isinstance(self.content, str) else "".join(b.text for b in self.content)
        )


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class AnthropicMessage(Body):
    role: Literal["user", "assistant"]
    content: Text | Annotated[list[Block], Field(max_length=MAX_MESSAGES)]


class AnthropicTool(Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    description: Annotated[str, Field(max_length=10_000)] = ""
    input_schema: dict[str, JsonValue] = Field(default_factory=dict)


class AnthropicToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: Name | None = None


class MessagesBody(Body):
    model: Name | None = None
    max_tokens: Tokens
    messages: Annotated[list[AnthropicMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: Text | Annotated[list[TextBlock], Field(max_length=MAX_MESSAGES)] | None = None
    stop_sequences: Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    tools: Annotated[list[AnthropicTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: AnthropicToolChoice | None = None

    def system_text(self) -> str | None:
        if self.system is None or isinstance(self.system, str):
            return self.system
        return "".join(b.text for b in self.system)
