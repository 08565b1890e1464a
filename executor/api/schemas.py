"""OpenAI request bodies. Every number is finite and bounded, every string and list bounded;
fields this server cannot honour are refused by name rather than ignored."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

MAX_TEXT = 1_000_000  # characters of one prompt or message; the body limit bounds the total
MAX_MESSAGES = 1024
MAX_STOPS = 8
MAX_STOP_CHARS = 200
MAX_TOP_LOGPROBS = 20
MAX_TOOLS = 128
MAX_SEED = 2**63 - 1
MAX_TOKENS_FIELD = 10_000_000  # the real bound is the plan's context, checked per request

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(max_length=256)]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_FIELD)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Role(StrEnum):
    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class TextPart(Body):
    type: Literal["text"]
    text: Text


class FunctionCall(Body):
    name: Name
    arguments: Text = "{}"


class ToolCallIn(Body):
    id: Name = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Body):
    role: Role
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)] | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: Name | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionDef(Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    description: Annotated[str, Field(max_length=10_000)] = ""
    parameters: dict[str, JsonValue] = Field(default_factory=dict)


class Tool(Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Body):
    name: Name


class NamedTool(Body):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(Body):
    include_usage: bool = False


class Sampled(Body):
    """What both OpenAI endpoints share."""

    model: Name | None = None
    max_tokens: Tokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    """One choice per request (n > 1 is a 422)."""
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Name | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @model_validator(mode="before")
    @classmethod
    def _refuse_logit_bias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("logit_bias"):
            raise ValueError("logit_bias is not supported by this server")
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n > 1:
            raise ValueError("n > 1 is not supported by this server: send n requests instead")
        return n


class ChatBody(Sampled):
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: Tokens | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatBody:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.response_format is not None and self.response_format.type != "text":
            raise ValueError(
                f"response_format {self.response_format.type} is not supported by this server; "
                "ask for JSON in the prompt instead"
            )
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs tools")
        return self

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionBody(Sampled):
    prompt: Text
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: Literal[False] = False
    """Echoing the prompt back is not supported (true is a 422)."""
    suffix: None = None
    """Insertion (a suffix) is not supported."""
    best_of: Annotated[int, Field(ge=1, le=1)] = 1
