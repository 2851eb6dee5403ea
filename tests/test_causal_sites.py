"""The causal check's sites line up with the profiler's counts for every supported family (dense and MoE)."""

from __future__ import annotations

import pytest
from causal_tiny import one_thread  # noqa: F401
from moe_tiny import MOE_FAMILIES, tiny_moe_model
from tiny import family_configs, tiny_model

from sparcom.causal.sites import find_sites
from sparcom.models.adapters import adapter_for
from sparcom.profile.runner import model_sites

DENSE = sorted(family_configs(100))


def profiled_shapes(model) -> dict[str, tuple]:
    sites = model_sites(model, adapter_for(model.config.model_type))
    shapes = {f"neuron/{s.layer}": (s.width,) for s in sites.dense}
    shapes |= {f"shared_neuron/{s.layer}": (s.width,) for s in sites.shared}
    for s in sites.experts:
        shapes[f"expert/{s.layer}"] = (s.layout.num_experts,)
        shapes[f"expert_neuron/{s.layer}"] = (s.layout.num_experts, s.layout.width)
    return shapes


def causal_shapes(model) -> dict[str, tuple]:
    sites = find_sites(model)
    shapes = {}
    for kind, layers in (("neuron", sites.dense), ("shared_neuron", sites.shared), ("expert", sites.moe),
                         ("expert_neuron", sites.moe)):
        shapes |= {f"{kind}/{layer}": sites.shape(kind, layer) for layer in layers}
    return shapes


@pytest.mark.parametrize("model_type", DENSE + MOE_FAMILIES)
def test_sites_match_the_profiler(model_type):
    model = tiny_model(model_type) if model_type in DENSE else tiny_moe_model(model_type)
    assert causal_shapes(model) == profiled_shapes(model)
    sites = find_sites(model)
    for site in sites.moe.values():
        assert site.router is not None and site.top_k == 2
