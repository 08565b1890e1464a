"""From the engine's tokens to what a client sees: text deltas, tool calls, and where a stop
string ends the answer. Neither a stop string nor a tool call's markup ever reaches the text;
text that could be the start of either is held back until the next token decides. The text
comes from a streaming detokenizer (mlx-lm's, per completion), never from decoding the whole
completion again at every token."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.engine_api import Detokenizer, TokenEvent, ToolFormat


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as OpenAI's `function.arguments`."""

    def input(self) -> Any:
        return json.loads(self.arguments)


@dataclass
class Delta:
    text: str = ""
    tokens: list[TokenEvent] = field(default_factory=list)
    """The tokens this text came from (for logprobs)."""
    tool_call: ToolCall | None = None


def _tool_calls(parsed: Any) -> list[ToolCall]:
    calls = parsed if isinstance(parsed, list) else [parsed]
    out = []
    for c in calls:
        args = c.get("arguments", {})
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        out.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", str(c["name"]), text))
    return out


def _held(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that could begin one of `markers`."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


class TextStream:
    def __init__(
        self,
        detokenizer: Detokenizer,
        stops: Sequence[str],
        tools: ToolFormat | None,
        tool_specs: list[dict[str, Any]] | None = None,
    ) -> None:
        self.detokenizer = detokenizer
        self.stops = list(stops)
        self.tools = tools
        self.tool_specs = tool_specs
        self.raw = ""
        self.pos = 0
        self.in_tool = False
        self.pending: list[TokenEvent] = []
        self.stopped = False
        """A stop string was reached: the generation should be cancelled."""
        self.stop_hit: str | None = None
        self.made_tool_call = False

    def feed(self, event: TokenEvent) -> list[Delta]:
        self.pending.append(event)
        self.detokenizer.add_token(event.token)
        self.raw = self.detokenizer.text
        return self._advance(final=False)

    def finish(self) -> list[Delta]:
        """The generation ended: release what was held back."""
        self.detokenizer.finalize()
        self.raw = self.detokenizer.text
        return self._advance(final=True)

    def _markers(self) -> list[str]:
        return self.stops + ([self.tools.start] if self.tools else [])

    def _emit(self, upto: int) -> list[Delta]:
        text = self.raw[self.pos : upto]
        self.pos = upto
        if not text:
            return []
        tokens, self.pending = self.pending, []
        return [Delta(text, tokens)]

    def _advance(self, final: bool) -> list[Delta]:
        out: list[Delta] = []
        while not self.stopped:
            if self.in_tool:
                if not self._close_tool(out, final):
                    break
                continue
            rest = self.raw[self.pos :]
            hits = [(i, m) for m in self._markers() if (i := rest.find(m)) >= 0]
            if not hits:
                hold = 0 if final else _held(rest, self._markers())
                out += self._emit(len(self.raw) - hold)
                break
            i, marker = min(hits, key=lambda h: h[0])
            out += self._emit(self.pos + i)
            self.pos += len(marker)
            if self.tools and marker == self.tools.start and marker not in self.stops:
                self.in_tool = True
            else:
                self.stopped, self.stop_hit = True, marker
        return out

    def _close_tool(self, out: list[Delta], final: bool) -> bool:
        assert self.tools is not None
        end = self.raw.find(self.tools.end, self.pos)
        if end < 0 and not final:
            return False
        body = self.raw[self.pos : end if end >= 0 else len(self.raw)]
        start = self.pos - len(self.tools.start)
        self.pos = end + len(self.tools.end) if end >= 0 else len(self.raw)
        self.in_tool = False
        self.pending = []
        try:
            calls = _tool_calls(self.tools.parse(body, self.tool_specs))
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not a call after all (cut short, or malformed): the client sees it as text.
            out.append(Delta(self.raw[start : self.pos]))
            return True
        self.made_tool_call = True
        out.extend(Delta(tool_call=c) for c in calls)
        return True
