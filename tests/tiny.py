"""Tiny random models and a tiny fast tokenizer, built offline from configs (no downloads)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TRAINING_TEXT = [
    "Classify the sentiment of the review as one of: positive, negative, neutral.",
    "Write a Python function that returns the sum of a list of numbers.",
    "What is the capital of France? Answer in one word.",
    "Write a short poem about the sea and the wind at night.",
    "A train travels 60 km in 45 minutes. What is its speed in km/h?",
    "Summarize the following article in one sentence for a busy reader.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
] * 4


@cache
def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (fast, with offsets), optionally with a ChatML chat template."""
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
    )
    if chat:
        tokenizer.chat_template = CHATML
    return tokenizer


def _common(vocab: int) -> dict:
    return dict(vocab_size=vocab, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                tie_word_embeddings=False)


def family_configs(vocab: int) -> dict[str, dict]:
    """A tiny config per supported dense family: model_type → config kwargs."""
    gated = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, **_common(vocab))
    return {
        "llama": dict(model_type="llama", **gated),
        "mistral": dict(model_type="mistral", **gated),
        "qwen2": dict(model_type="qwen2", **gated),
        "qwen3": dict(model_type="qwen3", head_dim=8, **gated),
        "gemma3_text": dict(model_type="gemma3_text", head_dim=8, hidden_activation="gelu_pytorch_tanh",
                            sliding_window=16, **gated),
        "phi3": dict(model_type="phi3", **gated),
        "gemma": dict(model_type="gemma", head_dim=8, hidden_activation="gelu_pytorch_tanh", **gated),
        "gemma2": dict(model_type="gemma2", head_dim=8, hidden_activation="gelu_pytorch_tanh", sliding_window=16,
                       **gated),
        "olmo": dict(model_type="olmo", **gated),
        "olmo2": dict(model_type="olmo2", **gated),
        "granite": dict(model_type="granite", **gated),
        "smollm3": dict(model_type="smollm3", **gated),
        "gpt2": dict(model_type="gpt2", n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=512,
                     vocab_size=vocab, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
        "gpt_neox": dict(model_type="gpt_neox", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, rotary_pct=0.5, **_common(vocab)),
        "opt": dict(model_type="opt", hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                    word_embed_proj_dim=32, activation_function="relu", do_layer_norm_before=True,
                    **_common(vocab)),
    }


def tiny_model(model_type: str, seed: int = 0, vocab: int | None = None, **overrides) -> torch.nn.Module:
    """A randomly initialised tiny model of ``model_type`` in float32 eval mode."""
    from transformers import AutoConfig

    vocab = vocab or len(tiny_tokenizer())
    kwargs = {**family_configs(vocab)[model_type], **overrides}
    return build_scaled(AutoConfig.for_model(**kwargs), seed)


def build_scaled(config, seed: int = 0, experts_implementation: str | None = None) -> torch.nn.Module:
    """Build ``config`` with random weights from ``seed``, in float32 eval mode.

    Random init leaves activations tiny; the weights are scaled so signs are decided well away from rounding.
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(10.0)
    if experts_implementation is not None:
        model.set_experts_implementation(experts_implementation)
    return model.eval()


ROWS = [
    ("cls", "Classify the sentiment of the review as one of: positive, negative.", "I loved the sea.", "positive"),
    ("cls", "Is this message spam? Answer yes or no.", "", "no"),
    ("code", "Write a Python function that returns the sum of a list.", "", "def total(xs):\n    return sum(xs)"),
    ("code", "Fix the bug.", "def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"),
    ("code", "What does this print?", "print(add(2, 3))", "5"),
    ("qa", "What is the capital of France?", "", "Paris."),
    ("qa", "Answer the question about the passage.", "The wind blew at night. When did it blow?", "At night."),
    ("gen", "Write a short poem about the sea.", "", "The sea is wide,\nthe wind is high."),
    ("math", "A train travels 60 km in 45 minutes. What is its speed in km/h?", "", "60 / 0.75 = 80\nAnswer: 80"),
    ("math", "What is 12 times 7?", "", "12 * 7 = 84\nAnswer: 84"),
    ("sum", "Summarize the following article in one sentence.", "The sea was calm. A train passed by. " * 3,
     "A train passed the calm sea."),
    ("sum", "Give a one-line summary.", "The wind blew at night and the poem was short.", "A windy night."),
]


def write_dataset(path: Path, rows=ROWS) -> Path:
    """Write the small mixed-category test dataset in the HexaInst row format."""
    with path.open("w", encoding="utf-8") as handle:
        for index, (category, instruction, text, output) in enumerate(rows):
            handle.write(json.dumps({
                "id": f"t-{index:03d}", "category": category, "source": "ai" if index % 2 else "human",
                "origin": "tests", "instruction": instruction, "input": text, "output": output, "license": "CC0-1.0",
            }) + "\n")
    return path
