"""Models: shapes at native resolutions, determinism, neuron sites, weight exchange."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedunl_flwr.models import MODELS, build_model
from fedunl_flwr.records import (
    from_record,
    get_weights,
    model_to_record,
    set_weights,
    state_keys,
    to_record,
)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
def test_models_accept_every_native_resolution(name, size):
    model = build_model(name, 3, 7, width=4 if name != "cnn" else 8, seed=0).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_seeded_models_are_identical_and_seeds_differ():
    a = get_weights(build_model("resnet18", 3, 10, 4, seed=1))
    b = get_weights(build_model("resnet18", 3, 10, 4, seed=1))
    c = get_weights(build_model("resnet18", 3, 10, 4, seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_neuron_sites_are_unique_and_in_forward_order():
    model = build_model("resnet18", 3, 10, 4)
    names = [s.name for s in model.neuron_sites()]
    assert len(names) == len(set(names)) == 1 + 8 * 2
    assert names[:3] == ["stem.act", "stages.0.unit1.act", "stages.0.norm2"]
    vgg = build_model("vgg9", 1, 10, 4)
    assert [s.name for s in vgg.neuron_sites()][-2:] == ["hidden1.act", "hidden2.act"]
    modules = dict(vgg.named_modules())
    assert all(m in modules for s in vgg.neuron_sites() for m in s.zero_modules)


def test_weights_roundtrip_through_array_record():
    model = build_model("cnn", 1, 10, 8, seed=0)
    keys = state_keys(model)
    assert not any(k.endswith("num_batches_tracked") for k in keys)
    record = to_record(dict(zip(keys, get_weights(model), strict=True)))
    assert list(record) == keys
    other = build_model("cnn", 1, 10, 8, seed=5)
    set_weights(other, from_record(record))
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model.eval()(x), other.eval()(x))
    assert all(torch.equal(a, b) for a, b in zip(model_to_record(model).to_torch_state_dict()
                                                 .values(), record.to_torch_state_dict()
                                                 .values(), strict=True))


def test_set_weights_rejects_other_architectures():
    model = build_model("cnn", 1, 10, 8)
    named = from_record(model_to_record(model))
    with pytest.raises(ValueError, match="do not fit"):
        set_weights(model, {f"x.{k}": v for k, v in named.items()})
    with pytest.raises(ValueError, match="state order"):
        set_weights(model, dict(reversed(named.items())))
    with pytest.raises(ValueError, match="shape mismatch"):
        set_weights(build_model("cnn", 1, 10, 8), get_weights(build_model("cnn", 1, 10, 16)))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet50", 3, 10)
