import pytest
import torch
import torch.nn.functional as F

from lightning_sdm.nn.step_gelu import aten_gelu, step_gelu


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_aten_gelu_is_gelu(approximate: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 1, 256).to(dtype)
    expected = F.gelu(x.double(), approximate=approximate)
    limit = 1e-6 if dtype == torch.float32 else 1e-2
    got = aten_gelu(x, approximate)
    assert got.dtype == dtype
    assert (got.double() - expected).abs().max().item() <= limit * expected.abs().max().item()


def test_aten_gelu_leaves_onednn_as_it_found_it_even_when_it_fails() -> None:
    assert torch._C._get_mkldnn_enabled()
    aten_gelu(torch.randn(4))
    assert torch._C._get_mkldnn_enabled()
    with pytest.raises(RuntimeError):
        aten_gelu(torch.randn(4), approximate="cubic")
    assert torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        aten_gelu(torch.randn(4))
        assert not torch._C._get_mkldnn_enabled()
    finally:
        torch._C._set_mkldnn_enabled(True)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_measured_kernel_computes_the_approximation_asked_for(approximate: str) -> None:
    gelu = step_gelu(2, 128, torch.float32, approximate)
    x = torch.randn(2, 128) * 3
    torch.testing.assert_close(gelu(x), F.gelu(x, approximate=approximate))
    assert step_gelu(2, 128, torch.float32, approximate) is gelu  # measured once
