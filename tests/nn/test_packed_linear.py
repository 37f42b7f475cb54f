import functools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.packed_linear import (
    can_pack,
    fastest_paths,  # the measuring one: the tests' fixture makes decoding's pack all
    packed_projection,
    packs,
    plain_projection,
    projection,
    with_epilogue,
)


def require_packing(dtype: torch.dtype) -> None:
    if not packs(dtype):
        pytest.skip(f"this CPU's oneDNN does not pack {dtype} weights (AVX2 alone: no bf16)")


def test_this_machine_packs() -> None:
    # The tests below would pass vacuously on a build without oneDNN: say so instead.
    assert can_pack(torch.zeros(4, 4)), "this torch build cannot pack weights for oneDNN"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 10])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_projection_computes_the_linear_layer(
    dtype: torch.dtype, rows: int, with_bias: bool
) -> None:
    require_packing(dtype)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", ["packed", "linear"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_epilogues_apply_gelu_or_add_the_residual_as_separate_ops_would(
    dtype: torch.dtype, path: str, with_bias: bool
) -> None:
    if path == "packed":
        require_packing(dtype)
    torch.manual_seed(0)
    weight = torch.randn(96, 64).to(dtype)
    bias = torch.randn(96).to(dtype) if with_bias else None
    x, residual = torch.randn(2, 3, 64).to(dtype), torch.randn(2, 3, 96).to(dtype)
    product = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    expected = {
        "gelu": F.gelu(product),
        "gelu_tanh": F.gelu(product, approximate="tanh"),
        "add": residual.float() + product,
    }
    limit = (1e-5 if dtype == torch.float32 else 1e-2) * product.abs().max().item()
    for epilogue, wanted in expected.items():
        if path == "packed":
            project = packed_projection(weight, bias, 6, epilogue)
            assert project is not None
        else:
            project = plain_projection(weight, bias, epilogue)
        got = project(x, residual) if epilogue == "add" else project(x)
        assert got.shape == wanted.shape and got.dtype == dtype
        assert (got.float() - wanted).abs().max().item() <= limit, epilogue
    if dtype == torch.float32:  # exact and tanh GELU differ by more than fp32's tolerance
        assert (expected["gelu"] - expected["gelu_tanh"]).abs().max().item() > limit


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


def test_a_tensor_subclass_such_as_a_dtensor_shard_is_not_packed() -> None:
    class Shard(torch.Tensor):
        pass

    weight = torch.randn(8, 4).as_subclass(Shard)
    assert not can_pack(weight)
    assert can_pack(nn.Parameter(torch.randn(8, 4)))


def test_each_shape_takes_the_path_measured_faster_once_per_weights_and_rows(monkeypatch) -> None:
    """No size threshold decides: whichever path the measurement finds faster here, for
    each weight shape apart."""
    from lightning_sdm.nn import packed_linear

    weights = [torch.randn(64, 32), torch.randn(32, 64), torch.randn(64, 32)]
    measured = []
    timings = {"linear": {"64x32": 2.0, "32x64": 0.5}, "packed": {"64x32": 1.0, "32x64": 1.0}}

    def measure(ws, rows):
        measured.append(rows)
        return {path: dict(shapes) for path, shapes in timings.items()}

    monkeypatch.setattr(packed_linear, "measure_paths", measure)
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    mixed = {"64x32": "packed", "32x64": "linear"}
    assert fastest_paths(weights, 2) == mixed
    timings["linear"]["64x32"] = 0.5  # a CPU where MKL streams fast: same weights, cached
    assert fastest_paths(weights, 2) == mixed and measured == [2]
    assert set(fastest_paths(weights, 6).values()) == {"linear"}
    assert measured == [2, 6]
    same_shapes = [w.clone() for w in weights]  # a bf16 call's fresh copies, another model
    assert set(fastest_paths(same_shapes, 6).values()) == {"linear"}
    half = [w.half() for w in weights]  # oneDNN packs fp32 and bf16 only: nothing to time
    assert set(fastest_paths(half, 2).values()) == {"linear"}
    assert measured == [2, 6]
    assert packed_linear.summary(mixed) == "64x32 packed, 32x64 linear"
    assert packed_linear.summary({"64x32": "linear"}) == "linear"


def test_a_measured_choice_is_kept_on_disk_for_the_next_process(monkeypatch, tmp_path) -> None:
    from lightning_sdm.nn import packed_linear

    weights = [torch.randn(64, 32), torch.randn(32, 64)]
    measured = []

    def measure(ws, rows):
        measured.append(rows)
        return {"linear": {"64x32": 2.0, "32x64": 2.0}, "packed": {"64x32": 1.0, "32x64": 1.0}}

    packed = {"64x32": "packed", "32x64": "packed"}
    monkeypatch.setattr(packed_linear, "measure_paths", measure)
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    monkeypatch.setenv("LIGHTNING_SDM_CACHE", str(tmp_path))
    assert fastest_paths(weights, 2) == packed and measured == [2]
    stored = json.loads((tmp_path / "matmul_paths.json").read_text())
    key = next(iter(stored))
    assert stored[key] == packed and "torch" in key and "cpu" in key
    monkeypatch.setattr(packed_linear, "_CHOICES", {})  # a new process
    assert fastest_paths(weights, 2) == packed and measured == [2]
    (tmp_path / "matmul_paths.json").write_text('{"torn')  # a file cut short: measure again
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert fastest_paths(weights, 2) == packed and measured == [2, 2]
    # A file from an older version (one path per key) or edited by hand: measured again.
    (tmp_path / "matmul_paths.json").write_text(json.dumps({key: "packed", "x": {"a": "fast"}}))
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert fastest_paths(weights, 2) == packed and measured == [2, 2, 2]
    monkeypatch.setenv("LIGHTNING_SDM_CACHE", "off")
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    assert fastest_paths(weights, 2) == packed and measured == [2, 2, 2, 2]


def test_measuring_times_both_paths_for_each_shape_on_the_given_weights() -> None:
    from lightning_sdm.nn.packed_linear import measure_paths

    timings = measure_paths([torch.randn(256, 128), torch.randn(128, 256)], rows=4)
    assert set(timings) == {"linear", "packed"}
    for per_shape in timings.values():
        assert set(per_shape) == {"256x128", "128x256"} and all(t > 0 for t in per_shape.values())


def test_a_choice_measured_on_another_kind_of_cpu_of_the_same_name_is_measured_again(
    monkeypatch, tmp_path
) -> None:
    """Cluster nodes sharing one home folder: an AVX2 EPYC must not take the choice an
    AVX-512 EPYC of the same model name measured."""
    from lightning_sdm import machine as machine_module
    from lightning_sdm.nn import packed_linear

    weights = [torch.randn(64, 32)]
    measured = []

    def measure(ws, rows):
        measured.append(rows)
        return {"linear": {"64x32": 2.0}, "packed": {"64x32": 1.0}}

    monkeypatch.setattr(packed_linear, "measure_paths", measure)
    monkeypatch.setattr(packed_linear, "_CHOICES", {})
    monkeypatch.setenv("LIGHTNING_SDM_CACHE", str(tmp_path))
    monkeypatch.setattr(machine_module, "cpu_model", lambda: "AMD EPYC")
    for features in ("AVX512+avx512_bf16", "AVX2", "AVX512+avx512_bf16"):
        monkeypatch.setattr(machine_module, "cpu_features", lambda f=features: f)
        monkeypatch.setattr(packed_linear, "_CHOICES", {})  # a new process on that node
        fastest_paths(weights, 2)
    assert measured == [2, 2]  # the third node's kind was measured by the first


def test_the_machine_names_the_instructions_torch_dispatches_to() -> None:
    from lightning_sdm.machine import machine, machine_line

    features = machine()["features"]
    assert features.split("+")[0] == torch.backends.cpu.get_cpu_capability()
    assert f"({features})" in machine_line()


def test_an_opaque_projection_s_gelu_takes_the_measured_kernel(monkeypatch) -> None:
    """A LoRA adapter's FFN decoded through F.gelu (oneDNN's primitive, set up per call)
    where a merged model's took the kernel measured faster for its rows."""
    import lightning_sdm.nn.packed_linear as packed_linear

    asked = []

    def spy(rows, width, dtype, approximate="none"):
        asked.append((rows, width, dtype, approximate))
        return functools.partial(F.gelu, approximate=approximate)

    monkeypatch.setattr(packed_linear, "step_gelu", spy)
    weight = torch.randn(96, 64)
    x = torch.randn(2, 1, 64)
    got = with_epilogue(lambda x: F.linear(x, weight), "gelu_tanh")(x)
    torch.testing.assert_close(got, F.gelu(F.linear(x, weight), approximate="tanh"))
    assert asked == [(2, 96, torch.float32, "tanh")]
