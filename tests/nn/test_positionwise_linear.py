import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.positionwise_linear import PositionwiseLinear, position_view


@pytest.mark.parametrize("bias", [True, False])
def test_each_position_goes_through_its_own_weights_and_its_view_reads_them(bias):
    torch.manual_seed(0)
    layer = PositionwiseLinear(3, 5, 7, bias=bias)
    x = torch.randn(2, 4, 3, 5)
    y = layer(x)
    for position in range(3):
        b = layer.bias[position] if bias else None
        want = F.linear(x[..., position, :], layer.weight[position], b)
        torch.testing.assert_close(y[..., position, :], want)
        view = layer.at(position)
        assert type(view) is nn.Linear
        torch.testing.assert_close(view(x[..., position, :]), want)
        assert view.weight.data_ptr() == layer.weight[position].data_ptr()  # not a copy


def test_a_view_of_a_module_swaps_only_the_positionwise_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(5), PositionwiseLinear(2, 5, 5), nn.GELU())
    view = position_view(model, 1)
    assert type(view[1]) is nn.Linear and view[0].weight is model[0].weight  # shared
    assert isinstance(model[1], PositionwiseLinear)  # the model itself is unchanged
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(view(x[:, 1]), model(x)[:, 1])


def test_the_wrong_number_of_positions_is_named():
    with pytest.raises(ValueError, match="3 positions for a layer with weights for 2"):
        PositionwiseLinear(2, 4, 4)(torch.zeros(1, 3, 4))
