"""Turn a loaded mlx-lm model into one rank's part of a pipeline, keeping mlx-lm's own forward
pass (masks, caches, layer code) and swapping three modules:

- `embed_tokens`, on stages after the first, receives the hidden state from the previous rank
  (its shape follows the token input);
- the inner model's final `norm` hands the stage's output on (`StageLinks.stage_output`): the
  last rank normalises and sends the result round to rank 0, which gets it back for its head;
- `lm_head`, on every rank but 0, is a stub whose output depends on everything this rank ran,
  so evaluating the logits on every rank runs its part of the pass, collectives included.

The inner model keeps only the stage's layers, so `make_prompt_cache` makes caches for those.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from executor.families import EMBEDDINGS, LAYER_INDEX_FIXES, NO_PIPELINE, OUTPUT_HEAD
from executor.stage_links import StageLinks
from protocol.model_spec import ModelSpec


def head_stub(h: mx.array, vocab: int) -> mx.array:
    """Logits-shaped zeros that cost nothing (a broadcast) but wait for `h`."""
    return mx.broadcast_to(h[..., :1] * 0, (*h.shape[:-1], vocab))


class HeadStub(nn.Module):
    """`lm_head` on ranks other than 0."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def __call__(self, h: mx.array) -> mx.array:
        return head_stub(h, self.vocab)


class StageInput(nn.Module):
    """`embed_tokens` on stages after the first. `as_linear` answers for a tied head."""

    def __init__(self, links: StageLinks, hidden: int, vocab: int) -> None:
        super().__init__()
        self.links, self.hidden, self.vocab = links, hidden, vocab

    def __call__(self, inputs: mx.array) -> mx.array:
        like = mx.zeros((*inputs.shape[:2], self.hidden), dtype=self.links.in_dtype)
        return self.links.stage_input(like)

    def as_linear(self, h: mx.array) -> mx.array:
        return head_stub(h, self.vocab)


class EmbeddingOnly(nn.Module):
    """The embedding of a stage-0 rank other than 0 where the head is tied to it: it embeds,
    but its `as_linear` is the stub (rank 0 alone computes logits)."""

    def __init__(self, embedding: nn.Module, vocab: int) -> None:
        super().__init__()
        self.embedding, self.vocab = embedding, vocab

    def __call__(self, inputs: mx.array) -> mx.array:
        out: mx.array = self.embedding(inputs)
        return out

    def as_linear(self, h: mx.array) -> mx.array:
        return head_stub(h, self.vocab)


class StageOutput(nn.Module):
    """The inner model's final `norm`, replaced (see the module docstring)."""

    def __init__(self, norm: nn.Module, links: StageLinks) -> None:
        super().__init__()
        self.norm, self.links = norm, links

    def __call__(self, h: mx.array) -> mx.array:
        return self.links.stage_output(h, self.norm)


class _Alone:
    """A one-rank group for mlx-lm's `pipeline()`, so it only recomputes its layer indices
    (with one pipeline rank its forward pass sends and receives nothing)."""

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1


def check_family(spec: ModelSpec) -> None:
    reason = NO_PIPELINE.get(spec.model_type) or NO_PIPELINE.get(spec.family)
    if reason:
        raise ValueError(f"{spec.model_type}: {reason}; the plan has pipeline stages")


def keep_layers(model: nn.Module, spec: ModelSpec, start: int, end: int) -> None:
    """The inner model keeps layers [start, end) only, its per-kind indices fixed."""
    inner = model.model
    inner.layers = inner.layers[start:end]
    if hasattr(inner, "pipeline"):
        inner.pipeline(_Alone(), split=[end - start])
        return
    fix = LAYER_INDEX_FIXES.get(spec.model_type) or LAYER_INDEX_FIXES.get(spec.family)
    if fix is not None:
        fix(inner, start, end)


def wire(model: nn.Module, spec: ModelSpec, links: StageLinks) -> None:
    """Make `model` (loaded with this rank's layers) one rank of the pipeline; its hand-offs'
    dtypes are agreed when the links are bound to the group."""
    role = links.role
    inner = model.model
    owner: Any = getattr(model, "language_model", model)  # the module holding the head
    vocab = int(spec.vocab)
    keep_layers(model, spec, *role.stage.layers)
    inner.norm = StageOutput(inner.norm, links)
    tied = not hasattr(owner, OUTPUT_HEAD)
    if not role.embeds:
        setattr(inner, EMBEDDINGS, StageInput(links, spec.hidden, vocab))
    elif tied and not role.holds_head:
        setattr(inner, EMBEDDINGS, EmbeddingOnly(getattr(inner, EMBEDDINGS), vocab))
    if not tied and not role.holds_head:
        setattr(owner, OUTPUT_HEAD, HeadStub(vocab))
