"""The engine's pieces on their own: the prefix-cache index, the lockstep header, rank-process
events, and the scheduler on a one-rank group (the multi-rank behaviour is in
`test_batching.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.commands import Command, Header
from executor.events import Failed, Progress, Ready, parse
from executor.prefix_cache import PrefixIndex


def test_prefix_index_picks_the_longest_shared_prefix_and_evicts_least_recent() -> None:
    index = PrefixIndex(enabled=True, trimmable=True)
    index.add(1, [1, 2, 3, 4])
    index.add(2, [1, 2, 9])
    hit = index.lookup([1, 2, 3, 4, 5])
    assert hit is not None and (hit.entry, hit.tokens, hit.move) == (1, 4, True)
    assert 1 not in index.entries  # moved into the sequence
    hit = index.lookup([1, 2, 9])  # one prompt token is always left to compute
    assert hit is not None and (hit.entry, hit.tokens, hit.move) == (2, 2, False)
    assert index.lookup([7, 8]) is None
    index.add(3, [5, 5, 5])
    assert index.evict(budget_tokens=4) == [2]  # 2 was used more recently than 3 was added
    assert (index.stats.hits, index.stats.misses, index.stats.cached_tokens) == (2, 1, 6)


def test_prefix_index_without_trimmable_caches_takes_whole_entries_only() -> None:
    index = PrefixIndex(enabled=True, trimmable=False)
    index.add(1, [1, 2, 3])
    assert index.lookup([1, 2, 4]) is None
    hit = index.lookup([1, 2, 3, 4])
    assert hit is not None and hit.move and hit.tokens == 3


def test_header_round_trip() -> None:
    h = Header(Command.STEP, payload=5, drops=2, evicts=1, admit=7, hit=3, hit_tokens=40)
    assert Header.parse(h.ints()) == h
    assert Header.parse(Header(Command.GREEDY_BATCH, batch=4, steps=9).ints()).batch == 4


def test_rank_events_parse() -> None:
    assert parse('{"event": "progress", "done": 1, "total": 4}') == Progress(1, 4)
    assert parse('{"event": "ready", "url": null}') == Ready(None)
    assert parse('{"event": "failed", "reason": "peer 1 lost"}') == Failed("peer 1 lost")
    assert parse("[ring] Socket 5 was closed") is None
    assert parse('{"event": "nonsense"}') is None


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> object:
    from executor.loader import load_shard
    from executor.lockstep import Lockstep
    from executor.scheduler import Scheduler
    from executor.tiny_models import build_model

    model_dir = build_model(Path(tmp_path_factory.mktemp("m")) / "qwen3", "qwen3", seed=1)
    model, _, _ = load_shard(model_dir)
    s = Scheduler(Lockstep(model, None, []), context_tokens=64, batch_size=2, max_queue=1)
    yield s
    s.close()


def _tokens(handle: object) -> list[int]:
    from executor.engine_api import TokenEvent

    return [e.token for e in handle if isinstance(e, TokenEvent)]  # type: ignore[attr-defined]


def test_one_rank_scheduler_batches_cancels_and_refuses(scheduler: object) -> None:
    from executor.engine_api import Done, EngineBusy, Finish, Generation, Sampling
    from executor.scheduler import Scheduler

    s = scheduler
    assert isinstance(s, Scheduler)
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    alone = [_tokens(s.submit(Generation(p, Sampling(5)))) for p in prompts]
    together = [s.submit(Generation(p, Sampling(5))) for p in prompts]
    assert [_tokens(h) for h in together] == alone
    # Two sequences reserving the whole context fill the budget; one more waits; then busy.
    held = [s.submit(Generation([3], Sampling(1000))) for _ in range(3)]
    with pytest.raises(EngineBusy):
        s.submit(Generation([3], Sampling(1000)))
    for h in held:
        h.cancel()
    ends = [next(e for e in h if isinstance(e, Done)).finish for h in held]
    assert ends == [Finish.CANCELLED] * 3
    with pytest.raises(ValueError, match="64 tokens"):
        s.submit(Generation(list(range(3, 70)), Sampling(1)))
