"""The typed info record (SampleInfo): its mapping view, its one merge rule, and the renamed options."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import refine.distributed as rd
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import DiscriminatorRatio
from refine.samplers import SampleInfo, get_sampler
from refine.samplers.dot import DOTSampler
from refine.stream import merged_info
from refine.target import LatentTarget

FAST = {
    "none": {},
    "mh": {"k": 3},
    "rs": {"burn_in": 64},
    "drs": {"burn_in": 64},
    "sir": {"candidates": 3},
    "ddls": {"steps": 3, "mala": True},
    "dcd": {"steps": 3},
    "dgflow": {"steps": 3},
    "dot": {"steps": 3, "space": "latent"},
}

#: The keys each method's record held before the record was typed; they are all still there.
#: Added since: the counters behind the rates where the method has them (none: proposals and
#: accepted; mh: accepted; MALA: proposals, accepted and proposals_per_sample).
KEYS_BEFORE = {
    "none": "proposals_per_sample acceptance_rate",
    "mh": "chains k proposals acceptance_rate proposals_per_sample chains_never_moved",
    "rs": "proposals accepted acceptance_rate expected_acceptance_rate proposals_per_sample burn_in burn_in_reused "
    "log_M m_updates",
    "drs": "proposals accepted acceptance_rate expected_acceptance_rate proposals_per_sample burn_in burn_in_reused "
    "log_M m_updates gamma_shift",
    "sir": "candidates proposals proposals_per_sample ess",
    "ddls": "space steps g_backward d_backward g_backward_per_sample d_backward_per_sample acceptance_rate "
    "potential_start_mean potential_end_mean log_ratio_end_mean",
    "dcd": "space steps g_backward d_backward g_backward_per_sample d_backward_per_sample "
    "potential_start_mean potential_end_mean log_ratio_end_mean",
    "dgflow": "space steps g_backward d_backward g_backward_per_sample d_backward_per_sample "
    "potential_start_mean potential_end_mean log_ratio_end_mean divergence",
    "dot": "space steps g_backward d_backward g_backward_per_sample d_backward_per_sample "
    "potential_start_mean potential_end_mean log_ratio_end_mean k_eff space_transport objective_start_mean "
    "objective_end_mean",
}
COMMON = {"method", "n", "g_evals", "d_evals", "g_evals_per_sample", "d_evals_per_sample", "wall_time_s"}


def tiny_target():
    torch.manual_seed(0)
    g = torch.nn.Sequential(torch.nn.Linear(4, 6))
    d = torch.nn.Sequential(torch.nn.Linear(6, 1))
    return LatentTarget(LatentGenerator(g, NormalPrior((4,))), DiscriminatorRatio(d))


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_sampler_returns_a_record_with_the_keys_run_json_held(name):
    res = get_sampler(name, **FAST[name]).sample(tiny_target(), 10, rng=torch.Generator().manual_seed(0))
    info = res.info
    assert isinstance(info, SampleInfo)
    plain = dict(info)
    assert COMMON | set(KEYS_BEFORE[name].split()) <= set(plain), sorted(
        COMMON | set(KEYS_BEFORE[name].split()) - set(plain)
    )
    assert plain == info.to_dict() and json.loads(json.dumps(plain)) == plain  # JSON as it is
    # the rates are derived from the counters, and the record reads back from its JSON as it was
    assert plain["g_evals_per_sample"] == info.g_evals / 10
    if info.accepted is not None:
        assert plain["acceptance_rate"] == info.accepted / info.proposals
    back = SampleInfo.from_dict(json.loads(json.dumps(plain)))
    assert dict(back) == plain


def _shard(n, proposals, accepted, ess, wall, shard):
    return SampleInfo(
        method="mh",
        n=n,
        g_evals=4 * n,
        d_evals=4 * n,
        proposals=proposals,
        accepted=accepted,
        wall_time_s=wall,
        extras={"chains": n, "k": 3, "chains_never_moved": 1, "ess": ess, "shard": shard},
    )


def test_one_merge_rule_for_shards_and_chunks():
    a, b = _shard(10, 30, 3, 0.5, 1.0, 0), _shard(30, 90, 27, 0.9, 2.0, 1)
    m = rd.merge_info([a, dict(b)])  # records, or their JSON read back
    assert isinstance(m, SampleInfo)
    assert (m.n, m.proposals, m.accepted, m.g_evals) == (40, 120, 30, 160)
    assert m["acceptance_rate"] == 30 / 120 and m["proposals_per_sample"] == 3.0 and m["g_evals_per_sample"] == 4.0
    assert m["chains"] == 40 and m["chains_never_moved"] == 2 and m["k"] == 3  # counts add up, agreed values stay
    assert m["ess"] == pytest.approx((0.5 * 10 + 0.9 * 30) / 40)  # sample-weighted
    assert m["per_shard"] == {"shard": [0, 1]} and m["shard_time_s_sum"] == 3.0
    # chunked runs use the same rule; the run's own clock replaces the sum of the parts
    c = merged_info([a, b], chunk=30, wall_time_s=5.0)
    assert (
        c["wall_time_s"] == 5.0
        and c["chunks"] == {"count": 2, "size": 30}
        and c["acceptance_rate"] == m["acceptance_rate"]
    )
    assert merged_info([a], chunk=30) is a
    # a counter one part lacks is not summed into a wrong total
    assert rd.merge_info([a, dataclasses.replace(b, accepted=None)]).accepted is None


def test_the_record_is_read_only_and_extras_cannot_shadow_counters():
    info = SampleInfo(method="x", n=2, g_evals=2, proposals=4, accepted=1)
    with pytest.raises(TypeError):
        info["n"] = 3  # type: ignore[index]
    with pytest.raises(ValueError, match="counters"):
        SampleInfo(method="x", n=2, extras={"g_evals": 5})
    with pytest.raises(ValueError, match="counters"):
        SampleInfo(method="x", n=2, proposals=4, accepted=1, extras={"acceptance_rate": 0.5})
    assert info.with_extras(seed=1)["seed"] == 1 and "seed" not in info
    assert math.isclose(info.acceptance_rate, 0.25) and info.proposals_per_sample == 2.0


def test_dot_space_target_is_space_data_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match='space="target" is now space="data"'):
        direct = DOTSampler(space="target")
    with pytest.warns(DeprecationWarning, match="space=data"):
        built = get_sampler("dot", space="target")
    assert direct.space == built.space == "data" and built.moves_in_data_space
    assert built == get_sampler("dot", space="data")


def test_the_samplers_temperature_is_potential_temperature_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="potential_temperature"):
        s = get_sampler("ddls", temperature="0.5")
    assert s.potential_temperature == 0.5 and "temperature" not in s.options()
    with pytest.warns(DeprecationWarning, match="potential_temperature"):
        assert s.temperature == 0.5
    with pytest.raises(ConfigError, match="same option"):
        get_sampler("ddls", temperature=0.5, potential_temperature=0.5)
