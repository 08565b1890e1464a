"""Rank 0's API over a real 2-rank loopback group serving a scripted model (see
`scripted_model.py`): the `openai` and `anthropic` clients, tool calls, logprobs, stops,
seeds, usage, cancellation, the busy queue; every bad input a short 4xx in OpenAI's shape."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from scripted_model import ARGUMENTS, CALL_TEXT, TOOL_NAME, build_scripted_model

from asymtp.api_group import Group, serving_group
from executor.api.bounds import TokenRequired, check_exposure

pytestmark = pytest.mark.slow

TOKEN = "test-token"
QUEUE = 15
CONTEXT = 4096
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEATHER = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK = [{"role": "user", "content": "weather in Paris?"}]
GREEDY = {"temperature": 0}  # this anthropic client has no temperature argument


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    model = build_scripted_model(tmp_path_factory.mktemp("scripted") / "model")
    work = tmp_path_factory.mktemp("group")
    # One sequence at a time and 15 waiting: the queue test's arithmetic stays exact.
    with serving_group(model, work, [0.5, 0.5], CONTEXT, TOKEN, batch_size=1, max_queue=QUEUE) as g:
        yield g


def post(group: Group, path: str, body: Any, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{group.url}{path}", json=body, headers=AUTH, timeout=timeout)


def openai_client(group: Group) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{group.url}/v1", api_key=TOKEN, max_retries=0)


def test_openai_client_gets_tool_calls_not_text(group: Group) -> None:
    client = openai_client(group)
    r = client.chat.completions.create(model="model", messages=ASK, tools=[WEATHER], temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == ARGUMENTS
    assert r.usage.prompt_tokens > 0 and r.usage.prompt_tokens_details.cached_tokens == 0

    stream = client.chat.completions.create(
        model="model",
        messages=ASK,
        tools=[WEATHER],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c for ch in chunks if ch.choices for c in ch.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == [TOOL_NAME]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert not "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def test_without_tools_the_answer_is_text_without_end_of_turn(group: Group) -> None:
    client = openai_client(group)
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather "},
                {"type": "text", "text": "in Paris?"},
            ],
        },
    ]
    r = client.chat.completions.create(
        model="model", messages=messages, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert (
        choice.message.content.startswith("<tool_call>")
        and "<|im_end|>" not in choice.message.content
    )
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    assert tokens[0].top_logprobs[0].token == tokens[0].token  # greedy: the chosen one is the best


def test_stop_text_never_appears(group: Group) -> None:
    client = openai_client(group)
    r = client.chat.completions.create(model="model", messages=ASK, temperature=0, stop=["weather"])
    assert r.choices[0].message.content == '<tool_call>{"name": "get_'
    assert r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model="model", messages=ASK, temperature=0, stop="weather", stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed) == r.choices[0].message.content
    )


def test_seed_gives_the_same_text_and_no_seed_fresh_text(group: Group) -> None:
    client = openai_client(group)

    def sample(n: int = 12, **kw: Any) -> list[str]:
        r = client.completions.create(
            model="model", prompt="the model of", max_tokens=n, logprobs=0, **kw
        )
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == n
        return list(r.choices[0].logprobs.tokens)

    assert sample(seed=7, temperature=1) == sample(seed=7, temperature=1)
    assert sample(temperature=1) != sample(temperature=1)
    # Greedy on a random bigram model repeats itself; a presence penalty makes it stop.
    greedy = sample(24, temperature=0)
    penalised = sample(24, temperature=0, presence_penalty=2.0)
    assert penalised != greedy


def test_anthropic_client_messages_and_stream(group: Group) -> None:
    from anthropic import Anthropic

    client = Anthropic(base_url=group.url, api_key=TOKEN, max_retries=0)
    tools = [{"name": TOOL_NAME, "description": "weather", "input_schema": {"type": "object"}}]
    m = client.messages.create(
        model="model", max_tokens=32, messages=ASK, tools=tools, extra_body=GREEDY
    )
    assert m.stop_reason == "tool_use"
    (block,) = m.content
    assert block.type == "tool_use" and block.name == TOOL_NAME and block.input == ARGUMENTS

    m = client.messages.create(
        model="model", max_tokens=2, messages=ASK, system="be brief", extra_body=GREEDY
    )
    assert m.stop_reason == "max_tokens" and m.content[0].type == "text"
    assert m.usage.output_tokens == 2 and m.content[0].text == "<tool_call>" + CALL_TEXT

    with client.messages.stream(
        model="model", max_tokens=32, messages=ASK, tools=tools, extra_body=GREEDY
    ) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert final.stop_reason == "tool_use" and final.content[0].input == ARGUMENTS


def test_a_client_that_leaves_frees_the_group(group: Group) -> None:
    body = {"prompt": "the model of", "max_tokens": 200, "temperature": 1, "stream": True}
    with httpx.stream(
        "POST", f"{group.url}/v1/completions", json=body, headers=AUTH, timeout=60
    ) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    # The next request is served at once: the abandoned one stopped at its next step.
    r2 = post(group, "/v1/completions", {"prompt": "a", "max_tokens": 2, "temperature": 0})
    assert r2.status_code == 200
    health = httpx.get(f"{group.url}/healthz").json()
    assert health["in_flight"] == 0 and health["ok"]


def test_a_full_queue_answers_429_with_retry_after(group: Group) -> None:
    """A long generation holds the engine while 20 one-token requests arrive: 15 may wait
    behind it, the rest are refused at once."""
    # Greedy, this prompt loops without ever ending its turn: it lasts its 4,000 tokens.
    hold = {"prompt": "the model of", "max_tokens": 4000, "temperature": 0, "stream": True}
    short = {"prompt": "the model of", "max_tokens": 1, "temperature": 0}
    codes: list[httpx.Response] = []

    url = f"{group.url}/v1/completions"
    client = httpx.Client(headers=AUTH, timeout=600, limits=httpx.Limits(max_connections=20))

    def one() -> None:
        codes.append(client.post(url, json=short))

    threads = [threading.Thread(target=one) for _ in range(20)]
    with httpx.stream("POST", url, json=hold, headers=AUTH, timeout=600) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # the long one is decoding
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(codes) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    # Leaving the stream cancels the long one: the queued requests are served.
    for t in threads:
        t.join()
    client.close()
    busy = [r for r in codes if r.status_code == 429]
    assert len(busy) == 20 - QUEUE and all(r.status_code in (200, 429) for r in codes), [
        (r.status_code, r.text[:80]) for r in codes
    ]
    assert int(busy[0].headers["Retry-After"]) >= 1
    assert busy[0].json()["error"]["type"] == "rate_limit_error"


BAD = [
    ({"messages": ASK, "temperature": float("nan")}, 422, "temperature"),
    ({"messages": ASK, "n": 2}, 422, "n"),
    ({"messages": ASK, "response_format": {"type": "json_object"}}, 422, "response_format"),
    ({"messages": ASK, "max_tokens": 10_000}, 400, f"{CONTEXT}"),
    ({"messages": ASK, "stop": ["x"] * 50}, 422, "stop"),
    ({"messages": ASK, "stop": ["x" * 5000]}, 422, "stop"),
    ({"messages": ASK, "logit_bias": {"1": 5}}, 422, "logit_bias"),
    ({"messages": ASK, "tools": [WEATHER], "tool_choice": "required"}, 422, "tool_choice"),
    ({"messages": ASK, "model": "gpt-4"}, 404, "gpt-4"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
    ({"messages": ASK, "top_logprobs": 3}, 422, "logprobs"),
    ({"messages": [{"role": "user", "content": "x" * 1_500_000}]}, 422, "content"),
]


@pytest.mark.parametrize(("body", "status", "named"), BAD)
def test_bad_input_is_a_short_4xx_in_openai_shape(
    group: Group, body: Any, status: int, named: str
) -> None:
    raw = json.dumps(body).replace("NaN", "NaN")  # Python writes NaN; strict JSON parsers would not
    r = httpx.post(
        f"{group.url}/v1/chat/completions",
        content=raw,
        headers={**AUTH, "content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and named in err["message"] + str(
        err["param"]
    )
    assert len(r.content) < 1000


def test_prompt_beyond_context_names_both_numbers(group: Group) -> None:
    r = post(group, "/v1/completions", {"prompt": "the model " * 200, "max_tokens": 4000})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "4000" in message and str(CONTEXT) in message


def test_body_limit_token_and_anthropic_errors(group: Group) -> None:
    huge = {"prompt": "x" * (5 * 1024 * 1024)}
    assert post(group, "/v1/completions", huge).status_code == 413
    r = httpx.post(f"{group.url}/v1/completions", json={"prompt": "a"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = post(group, "/v1/messages", {"messages": ASK})
    assert r.status_code == 422 and r.json()["type"] == "error"
    assert "max_tokens" in r.json()["error"]["message"]
    assert httpx.get(f"{group.url}/healthz").status_code == 200  # open: the agent watches it


def test_beyond_loopback_needs_a_token() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "t")
    with pytest.raises(TokenRequired, match="--api-token"):
        check_exposure("0.0.0.0", None)


def _metric(group: Group, name: str) -> int:
    text = httpx.get(f"{group.url}/metrics", headers=AUTH, timeout=30).text
    values = dict(line.split(" ") for line in text.splitlines())
    return int(values[f"asymtp_rank0_{name}"])


def test_a_prefix_cache_hit_shows_in_usage_and_metrics_with_the_same_text(group: Group) -> None:
    body = {"model": "model", "messages": ASK, "max_tokens": 8, **GREEDY}
    hits = _metric(group, "prefix_cache_hits")
    first = post(group, "/v1/chat/completions", body).json()
    second = post(group, "/v1/chat/completions", body).json()
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert _metric(group, "prefix_cache_hits") > hits
