"""A real llama model whose weights follow a script: after a chat template's generation
prompt it writes one tool call, then ends its turn; after any other token it samples from a
random distribution. Its chat template is Qwen's style with tools, so mlx-lm infers its tool
parser (`json_tools`) as for a real Qwen model. Nothing is faked: the group runs the model,
the API parses what it writes.

How: every layer's output projections are zero, so the last hidden state is the current
token's embedding, and the output layer maps the embedding of each scripted token to the
next one (a bigram model)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

TOOL_NAME = "get_weather"
ARGUMENTS = {"city": "Paris"}
CALL_TEXT = json.dumps({"name": TOOL_NAME, "arguments": ARGUMENTS})
ADDED = ["<tool_call>", CALL_TEXT, "</tool_call>"]
SCRIPT_SHARPNESS = 3.0
RANDOM_SCALE = 0.3

TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n"
    'Call a function as <tool_call>{"name": <function-name>, "arguments": <args>}'
    "</tool_call><|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n"
    "{{ messages[0]['content'] }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n{{ message.content or '' }}"
    "{% for tool_call in message.tool_calls or [] %}"
    "{% if tool_call.function is defined %}{% set tool_call = tool_call.function %}{% endif %}"
    '<tool_call>{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}'
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}"
    "\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_scripted_model(out: Path, seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    from tokenizers import AddedToken, Tokenizer

    from executor.tiny_models import VOCAB, config_for, write_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    eos, _ = write_tokenizer(out, VOCAB, seed)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.add_tokens([AddedToken(t, normalized=False) for t in ADDED])
    tok.save(str(out / "tokenizer.json"))
    tcfg = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**tcfg, "chat_template": TOOL_TEMPLATE}))
    newline = tok.encode("assistant\n").ids[-1]
    chain = [newline, *(tok.token_to_id(t) for t in ADDED), eos]

    cfg = config_for("llama", vocab_size=tok.get_vocab_size())
    mx.random.seed(seed)
    model_cls, args_cls = _get_classes(cfg)
    model = model_cls(args_cls.from_dict(cfg))
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
        layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    emb = model.model.embed_tokens.weight
    unit = emb / mx.linalg.norm(emb, axis=-1, keepdims=True)
    head = mx.random.normal(model.lm_head.weight.shape) * RANDOM_SCALE
    for a, b in itertools.pairwise(chain):
        head[b] = unit[a] * SCRIPT_SHARPNESS
    model.lm_head.weight = head
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps({**cfg, "eos_token_id": eos}, indent=2))
    return out
