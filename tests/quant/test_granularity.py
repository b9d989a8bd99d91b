import pytest
import torch

from fptq.quant.granularity import GroupLayout, group_size_value, resolve


def test_bounds_and_ragged_last_group():
    assert GroupLayout(8, 2).bounds() == [(0, 2), (2, 4), (4, 6), (6, 8)]
    smol = GroupLayout(576, 128)  # SmolLM2: 4.5 groups
    assert smol.bounds()[-1] == (512, 576) and smol.n_groups == 5 and smol.ragged
    assert not GroupLayout(1536, 128).ragged and GroupLayout(1536, 1536).per_channel
    assert GroupLayout(1536, 1536).n_groups == 1 and not GroupLayout(1536, 1536).ragged


def test_expand_repeats_each_group_over_its_columns():
    p = torch.tensor([[1.0, 2.0, 3.0]])
    assert GroupLayout(10, 4).expand(p).tolist() == [[1.0] * 4 + [2.0] * 4 + [3.0] * 2]
    assert GroupLayout(3, 3).expand(torch.tensor([[5.0]])).tolist() == [[5.0, 5.0, 5.0]]


def test_layout_rejects_impossible_groups():
    with pytest.raises(ValueError, match="group size"):
        GroupLayout(64, 0)
    with pytest.raises(ValueError, match="group size"):
        GroupLayout(64, 65)


def test_granularity_resolves_once_per_layer():
    """Per channel is group_size 0 everywhere; it resolves per layer to one group of all inputs."""
    assert resolve(0, 576) == GroupLayout(576, 576)
    assert group_size_value(resolve(0, 576)) == 0
    assert resolve(128, 576) == GroupLayout(576, 128) and group_size_value(resolve(128, 576)) == 128
    assert resolve(576, 576).per_channel  # one group spanning the layer
    with pytest.raises(ValueError, match="exceeds the layer's 64 input features"):
        resolve(128, 64, "model.layers.0.mlp.up_proj")
    with pytest.raises(ValueError, match="0 .per output channel. or a positive group size"):
        resolve(-1, 64)
