import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.packed_linear import (
    can_pack,
    packed_linears,
    packed_projection,
    plain_linear_layers,
    projection,
)


def test_this_machine_packs() -> None:
    # The tests below would pass vacuously on a build without oneDNN: say so instead.
    assert can_pack(torch.zeros(4, 4)), "this torch build cannot pack weights for oneDNN"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 10])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_projection_computes_the_linear_layer(
    dtype: torch.dtype, rows: int, with_bias: bool
) -> None:
    torch.manual_seed(0)
    weight = torch.randn(96, 64).to(dtype)
    bias = torch.randn(96).to(dtype) if with_bias else None
    project = packed_projection(weight, bias, rows)
    assert project is not None
    for shape in [(rows, 64), (2, rows, 64), (3, 1, 64)]:
        x = torch.randn(shape).to(dtype)
        expected = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
        got = project(x)
        assert got.shape == expected.shape and got.dtype == dtype
        scale = expected.abs().max().item()
        # bf16 rounds its output: compare against the fp32 result at bf16's resolution.
        limit = (1e-4 if dtype == torch.float32 else 1e-2) * scale
        assert (got.float() - expected).abs().max().item() <= limit


def test_a_strided_input_is_multiplied_as_its_values() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 16)
    x = torch.randn(2, 5, 16)[:, 2]  # a view with a gap between rows
    project = packed_projection(weight, None, 2)
    assert project is not None
    torch.testing.assert_close(project(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_weights_that_cannot_be_packed_keep_f_linear() -> None:
    weight = torch.randn(8, 4, dtype=torch.float64)
    assert packed_projection(weight, None, 2) is None
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(projection(weight, None, 2)(x), F.linear(x, weight))


class ScaledLinear(nn.Linear):
    """A subclass with a forward of its own, which packing must leave alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), ScaledLinear(32, 32), nn.Linear(32, 8))


def test_packed_linears_gives_the_same_outputs_and_restores_the_layers() -> None:
    network = tiny_network().eval()
    x = torch.randn(2, 16)
    expected = network(x)
    with torch.inference_mode(), packed_linears(network, rows=2) as packed:
        assert packed == 2  # the two plain layers, not the subclass
        assert "forward" not in vars(network[2])
        got = network(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all("forward" not in vars(layer) for layer in network)
    # Outside the block the layers read their (possibly changed) weights again.
    with torch.no_grad():
        network[0].weight.zero_()
    assert not torch.allclose(network(x), expected)


def test_packed_linears_restores_the_layers_when_the_block_fails() -> None:
    network = tiny_network()
    with pytest.raises(RuntimeError, match="inside"), packed_linears(network, rows=2):
        raise RuntimeError("inside")
    assert all("forward" not in vars(layer) for layer in network)


def test_small_weights_are_not_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_sdm.nn import packed_linear

    monkeypatch.setattr(packed_linear, "MIN_PACKED_ELEMENTS", 256 * 256)
    assert packed_projection(torch.randn(128, 128), None, 2) is None
    assert packed_projection(torch.randn(256, 256), None, 2) is not None


def test_a_tensor_subclass_such_as_a_dtensor_shard_is_not_packed() -> None:
    class Shard(torch.Tensor):
        pass

    weight = torch.randn(8, 4).as_subclass(Shard)
    assert not can_pack(weight)
    assert can_pack(nn.Parameter(torch.randn(8, 4)))


def test_the_faster_measured_path_is_chosen_once_per_weights_and_rows(monkeypatch) -> None:
    """No size threshold decides: whichever path the measurement finds faster here."""
    from lightning_sdm.nn import packed_linear

    weights = [torch.randn(64, 32), torch.randn(32, 64)]
    measured = []
    timings = {"linear": 2.0, "packed": 1.0}

    def measure(ws, rows):
        measured.append(rows)
        return dict(timings)

    monkeypatch.setattr(packed_linear, "measure_paths", measure)
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert packed_linear.fastest_path(weights, 2) == "packed"
    timings.update(linear=0.5)  # a CPU where MKL streams fast: same weights, cached choice
    assert packed_linear.fastest_path(weights, 2) == "packed" and measured == [2]
    assert packed_linear.fastest_path(weights, 6) == "linear" and measured == [2, 6]
    same_shapes = [w.clone() for w in weights]  # a bf16 call's fresh copies, another model
    assert packed_linear.fastest_path(same_shapes, 6) == "linear" and measured == [2, 6]
    half = [w.half() for w in weights]  # oneDNN packs fp32 and bf16 only: nothing to time
    assert packed_linear.fastest_path(half, 2) == "linear" and measured == [2, 6]


def test_a_measured_choice_is_kept_on_disk_for_the_next_process(monkeypatch, tmp_path) -> None:
    from lightning_sdm.nn import packed_linear

    weights = [torch.randn(64, 32), torch.randn(32, 64)]
    measured = []

    def measure(ws, rows):
        measured.append(rows)
        return {"linear": 2.0, "packed": 1.0}

    monkeypatch.setattr(packed_linear, "measure_paths", measure)
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    monkeypatch.setenv("LIGHTNING_SDM_CACHE", str(tmp_path))
    assert packed_linear.fastest_path(weights, 2) == "packed" and measured == [2]
    stored = json.loads((tmp_path / "matmul_paths.json").read_text())
    key = next(iter(stored))
    assert stored[key] == "packed" and "torch" in key and "cpu" in key
    monkeypatch.setattr(packed_linear, "_CHOICES", {})  # a new process
    assert packed_linear.fastest_path(weights, 2) == "packed" and measured == [2]
    (tmp_path / "matmul_paths.json").write_text('{"torn')  # a file cut short: measure again
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert packed_linear.fastest_path(weights, 2) == "packed" and measured == [2, 2]
    monkeypatch.setenv("LIGHTNING_SDM_CACHE", "off")
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert packed_linear.fastest_path(weights, 2) == "packed" and measured == [2, 2, 2]


def test_measuring_times_both_paths_on_the_given_weights() -> None:
    from lightning_sdm.nn.packed_linear import measure_paths

    timings = measure_paths([torch.randn(256, 128), torch.randn(128, 256)], rows=4)
    assert set(timings) == {"linear", "packed"} and all(t > 0 for t in timings.values())


def test_plain_linear_layers_are_the_ones_packed() -> None:
    network = tiny_network()
    assert plain_linear_layers(network) == [network[0], network[3]]
