"""What a client sees of the tokens: stop strings cut across token boundaries and never
shown, text that may begin a stop held back until the next token decides, tool calls parsed
by mlx-lm's parser and never shown as text. A real tokenizer, no group needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlx_lm.tool_parsers import json_tools

from executor.api.textstream import TextStream
from executor.engine_api import TokenEvent, ToolFormat
from executor.tiny_models import VOCAB, write_tokenizer

TOOLS = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> object:
    from mlx_lm.utils import load_tokenizer

    out: Path = tmp_path_factory.mktemp("tok")
    write_tokenizer(out, VOCAB)
    return load_tokenizer(out)


def run(
    tok: object, text: str, stops: list[str], tools: ToolFormat | None = None
) -> tuple[list[str], TextStream]:
    ids = tok.encode(text)  # type: ignore[attr-defined]
    stream = TextStream(tok.detokenizer, stops, tools)  # type: ignore[attr-defined]
    shown: list[str] = []
    for i in ids:
        shown += [d.text for d in stream.feed(TokenEvent(i)) if d.text]
        if stream.stopped:
            break
    shown += [d.text for d in stream.finish() if d.text]
    return shown, stream


def test_a_stop_string_across_tokens_is_cut_and_never_shown(tok: object) -> None:
    shown, stream = run(tok, "the ring fits the plan of the model", ["plan of"])
    assert "".join(shown) == "the ring fits the "
    assert stream.stopped and stream.stop_hit == "plan of"
    assert not any("pl" in s for s in shown)


def test_text_that_only_looks_like_a_stop_is_released(tok: object) -> None:
    shown, stream = run(tok, "the plan fits", ["plan of"])
    assert "".join(shown) == "the plan fits" and not stream.stopped


def test_a_tool_call_is_parsed_and_not_shown(tok: object) -> None:
    text = 'ok <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call> done'
    ids = tok.encode(text)  # type: ignore[attr-defined]
    stream = TextStream(tok.detokenizer, [], TOOLS)  # type: ignore[attr-defined]
    deltas = [d for i in ids for d in stream.feed(TokenEvent(i))] + stream.finish()
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert [(c.name, c.arguments) for c in calls] == [("f", '{"x": 1}')]
    assert "".join(d.text for d in deltas) == "ok  done" and stream.made_tool_call


def test_a_cut_short_tool_call_comes_back_as_text(tok: object) -> None:
    shown, stream = run(tok, 'a <tool_call>{"name": "f", "argu', [], TOOLS)
    assert "".join(shown) == 'a <tool_call>{"name": "f", "argu' and not stream.made_tool_call
