"""The real model end to end: SmolLM2-135M-Instruct imported from the GGUF that `make setup`
installs (llama, 30 layers, 9 query / 3 KV heads, Q4_1 layers beside a Q8_0 embedding).

- the import loads in mlx-lm unchanged, and asymtp's unsharded greedy decoding equals
  mlx-lm's own on it;
- sharded over 2 and 3 local ranks (uneven), float32 and the kept 4-bit, its logits stay
  within the relative tolerance and greedy continuations agree; a plan with a wrong KV-head
  mapping, and ranks whose all-sums are removed, fail the same check;
- planned weight bytes per rank equal what each rank holds after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor.gguf_header import GgmlType, GgufError, TensorInfo
from executor.gguf_import import _check_types, unpermute_rows
from executor.shipped_model import Variant, imported, shipped_gguf

PROMPT = "What is the capital of France?"
GREEDY_TOKENS = 12
# Few prompts and tokens: 30 layers over a ring of processes on a shared 2-core machine.
PARITY = {"n_logit_prompts": 1, "n_greedy": 2, "max_tokens": 4}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shipped_gguf()  # says how to install it when it is missing
    return tmp_path_factory.mktemp("real-model")


@pytest.fixture(scope="module")
def packed(cache: Path) -> Path:
    return imported(cache, Variant.PACKED, say=lambda _m: None)


def _chat_ids(model_dir: Path) -> list[int]:
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(model_dir)
    ids: list[int] = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True
    )
    return ids


def test_import_is_an_mlx_lm_model_with_its_mixed_quantization(packed: Path) -> None:
    config = json.loads((packed / "config.json").read_text())
    assert config["num_attention_heads"] == 9 and config["num_key_value_heads"] == 3
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    assert json.loads((packed / "generation_config.json").read_text())["eos_token_id"] == 2
    tok_config = json.loads((packed / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tok_config["chat_template"]


def test_unsharded_greedy_equals_mlx_lm_generate(packed: Path) -> None:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    from executor.loader import eos_token_ids, load_shard
    from executor.lockstep import Lockstep

    ids = _chat_ids(packed)
    model, tokenizer = load(str(packed))[:2]
    theirs = [int(t) for t, _ in generate_step(mx.array(ids), model, max_tokens=GREEDY_TOKENS)]
    ours_model, _, _ = load_shard(packed)
    eos = eos_token_ids(packed)
    ours = list(Lockstep(ours_model, None, eos).generate(ids, GREEDY_TOKENS))
    assert eos == sorted(tokenizer.eos_token_ids) == [2]
    assert ours == theirs[: len(ours)]
    text = tokenizer.decode([t for t in ours if t not in eos])
    print(repr(text))
    assert "Paris" in text and "<|" not in text


def test_q_k_rows_are_put_back_in_rotary_halves() -> None:
    import mlx.core as mx

    # llama.cpp's order for one head of 4 dims: rows [0, 2, 1, 3] of the original.
    permuted = mx.array([[0.0], [2.0], [1.0], [3.0]])
    assert unpermute_rows(permuted, heads=1).reshape(-1).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_types_without_an_exact_mlx_form_are_refused_by_name() -> None:
    table = [
        TensorInfo("token_embd.weight", (64, 32), GgmlType.Q8_0),
        TensorInfo("blk.0.ffn_up.weight", (64, 32), GgmlType.IQ2_XS),
    ]
    with pytest.raises(GgufError, match=r"IQ2_XS.*blk\.0\.ffn_up\.weight"):
        _check_types(table)


# ---- parity on ring groups ------------------------------------------------------------------
def _plan(model_dir: Path, shares: list[float], sharding: str = "asymmetric"):  # type: ignore[no-untyped-def]
    from executor.loader import read_json
    from planner.splits import plan_for_split

    return plan_for_split(read_json(model_dir / "config.json"), shares, sharding=sharding)


def _wrong_kv_heads(plan):  # type: ignore[no-untyped-def]
    """The same plan with each rank's KV heads moved by one: query heads then attend with
    another group's keys and values (shapes unchanged, so nothing but the numbers tells)."""
    kv = plan.model.kv_heads
    ranks = []
    for r in plan.ranks:
        a, b = r.kv_heads
        shift = 1 if b < kv else -1
        ranks.append(r.model_copy(update={"kv_heads": (a + shift, b + shift)}))
    return plan.model_copy(update={"ranks": ranks})


def _no_all_sum(tmp: Path, ranks: int) -> list[list[str]]:
    """Command prefixes that start each rank with its all-sums removed (a sitecustomize on
    PYTHONPATH replaces the block wrapper's call before the rank starts)."""
    site = tmp / "sabotage"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import executor.layer_patch as patch\n"
        "patch.AllSum.__call__ = lambda self, x, *a, **k: self.inner(x, *a, **k)\n"
    )
    return [["env", f"PYTHONPATH={site}"]] * ranks


# At these shares the planner keeps attention whole on one rank (the all-reduce is paid either
# way, and the FFN columns are the finer unit) and splits the FFN unevenly.
CASES = [
    pytest.param(Variant.FLOAT32, [0.6, 0.4], id="f32-2-ranks"),
    pytest.param(Variant.PACKED, [0.4, 0.3, 0.3], id="q4-3-ranks"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "shares"), CASES)
def test_sharded_real_model_matches_unsharded(
    cache: Path, variant: Variant, shares: list[float]
) -> None:
    from executor.parity import check

    model_dir = imported(cache, variant, say=lambda _m: None)
    report = check(model_dir, _plan(model_dir, shares), **PARITY)
    print("\n".join(report.lines()))
    assert report.passes(), report.lines()
    assert report.all_equal


@pytest.mark.slow
def test_a_wrong_kv_head_mapping_fails_parity(packed: Path) -> None:
    from executor.parity import check

    # The equal split gives each rank one KV group: moving them is a wrong GQA mapping.
    plan = _plan(packed, [1 / 3] * 3, sharding="equal")
    assert [r.kv_heads for r in plan.ranks] == [(0, 1), (1, 2), (2, 3)]
    report = check(packed, _wrong_kv_heads(plan), **PARITY)
    print("\n".join(report.lines()))
    assert not report.passes()


@pytest.mark.slow
def test_missing_all_sums_fail_parity(packed: Path, tmp_path: Path) -> None:
    from executor.parity import check

    # Every rank holds heads and FFN columns, so each runs the same (sabotaged) all-sums.
    plan = _plan(packed, [1 / 3] * 3, sharding="equal")
    report = check(packed, plan, prefixes=_no_all_sum(tmp_path, 3), **PARITY)
    print("\n".join(report.lines()))
    assert not report.passes()


# ---- bytes as loaded --------------------------------------------------------------------------
@pytest.mark.parametrize("shares", [[0.6, 0.4], [0.5, 0.3, 0.2]], ids=["2-ranks", "3-ranks"])
def test_planned_weight_bytes_equal_what_each_rank_holds(packed: Path, shares: list[float]) -> None:
    """The Q8_0 embedding beside Q4_1 layers is a per-module override in the quantization
    block: the planner must count it as 8-bit, on every rank that holds it whole."""
    from mlx.utils import tree_flatten

    from executor.loader import load_shard

    plan = _plan(packed, shares)
    for r in plan.ranks:
        model, _, _ = load_shard(packed, r)
        held = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        planned = r.memory_bytes.weights
        print(f"rank {r.rank}: planned {planned / 1e6:.2f} MB, holds {held / 1e6:.2f} MB")
        assert abs(planned - held) <= 0.01 * held, (r.rank, planned, held)


def test_import_gguf_refuses_a_file_that_is_not_gguf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asymtp.cli import main

    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf at all")
    assert main(["import-gguf", str(bogus), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a GGUF file" in err
    assert main(["import-gguf", str(tmp_path / "absent.gguf"), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
