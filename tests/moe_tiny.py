"""Tiny random Mixture-of-Experts models (hidden 32, 2–3 layers, 8 experts, top-2), built offline from configs."""

from __future__ import annotations

from tiny import build_scaled, tiny_tokenizer
from transformers import AutoConfig

_ROUTED = dict(num_experts_per_tok=2)
_DEEPSEEK = dict(intermediate_size=40, moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=1,
                 first_k_dense_replace=1, num_key_value_heads=4, **_ROUTED)


def moe_family_configs(vocab: int) -> dict[str, dict]:
    """model_type → config kwargs; families with dense or shared parts get 3 layers so every kind of layer occurs."""
    common = dict(vocab_size=vocab, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
    three = dict(common, num_hidden_layers=3)
    configs = {
        "mixtral": dict(common, intermediate_size=24, num_local_experts=8, **_ROUTED),
        "qwen2_moe": dict(three, intermediate_size=40, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                          num_experts=8, mlp_only_layers=[1], **_ROUTED),
        "qwen3_moe": dict(three, head_dim=8, intermediate_size=40, moe_intermediate_size=16, num_experts=8,
                          decoder_sparse_step=2, **_ROUTED),  # layers 1 MoE, 0 and 2 dense
        "olmoe": dict(common, intermediate_size=16, num_experts=8, **_ROUTED),
        "granitemoe": dict(common, intermediate_size=16, num_local_experts=8, **_ROUTED),
        "granitemoeshared": dict(common, intermediate_size=16, num_local_experts=8, shared_intermediate_size=24,
                                 **_ROUTED),
        "deepseek_v2": dict(three, **_DEEPSEEK, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
                            qk_rope_head_dim=8, v_head_dim=8, topk_method="group_limited_greedy", n_group=4,
                            topk_group=2),
        "deepseek_v3": dict(three, **_DEEPSEEK, kv_lora_rank=16, q_lora_rank=16, qk_nope_head_dim=8,
                            qk_rope_head_dim=8, v_head_dim=8, n_group=4, topk_group=2),
        "phimoe": dict(common, intermediate_size=16, num_local_experts=8, **_ROUTED),
        "gpt_oss": dict(common, intermediate_size=16, num_local_experts=8, head_dim=8, sliding_window=16,
                        layer_types=["sliding_attention", "full_attention"], **_ROUTED),
        "qwen3_next": dict(common, head_dim=8, intermediate_size=40, moe_intermediate_size=16,
                           shared_expert_intermediate_size=24, num_experts=8, linear_num_value_heads=4,
                           linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
                           layer_types=["linear_attention", "full_attention"], **_ROUTED),
        "glm4_moe": dict(three, **{k: v for k, v in _DEEPSEEK.items() if k != "num_key_value_heads"}, head_dim=8,
                         n_group=2, topk_group=1),
        "dots1": dict(three, **{k: v for k, v in _DEEPSEEK.items() if k != "num_key_value_heads"}, head_dim=8,
                      n_group=2, topk_group=1),
        "ernie4_5_moe": dict(three, intermediate_size=40, moe_intermediate_size=16, moe_num_experts=8, moe_k=2,
                             moe_num_shared_experts=1, moe_layer_start_index=1),
        "hunyuan_v1_moe": dict(common, head_dim=8, intermediate_size=16, num_experts=8, moe_topk=2,
                               num_shared_expert=1),
        "flex_olmo": dict(common, intermediate_size=16, num_experts=8, **_ROUTED),
        "exaone_moe": dict(three, head_dim=8, intermediate_size=40, moe_intermediate_size=16, num_experts=8,
                           num_shared_experts=1, first_k_dense_replace=1, **_ROUTED),
        "minimax": dict(common, head_dim=8, intermediate_size=16, num_local_experts=8,
                        layer_types=["linear_attention", "full_attention"], **_ROUTED),
    }
    return configs


MOE_FAMILIES = sorted(moe_family_configs(100))


def tiny_moe_model(model_type: str, seed: int = 0, experts_implementation: str | None = None, **overrides):
    """A randomly initialised tiny MoE model in float32 eval mode (weights scaled as in tests/tiny.py)."""
    kwargs = {**moe_family_configs(len(tiny_tokenizer()))[model_type], **overrides}
    config = AutoConfig.for_model(**{"model_type": model_type, **kwargs})
    return build_scaled(config, seed, experts_implementation)
