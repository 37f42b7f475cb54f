import pytest
import torch
import torch.nn.functional as F

from lightning_sdm.nn.level_embedding import level_lookup, summed_level_embedding

R, C, P, V, D = 3, 4, 9, 13, 6


def per_level_sum(ids, table, weights):
    total = 0
    for level in range(C):
        vectors = F.embedding(ids[:, level], table[level])
        if weights is not None:
            vectors = vectors * weights[:, level, :, None].to(vectors.dtype)
        total = total + vectors
    return total


@pytest.mark.parametrize("weighted", [False, True])
def test_the_summed_embedding_and_its_gradient_equal_a_lookup_per_level(weighted):
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(C, V, D, generator=generator, requires_grad=True)
    ids = torch.randint(0, V, (R, C, P), generator=generator)
    ids[0, 2, 3] = ids[0, 1, 3]  # the same id on two levels: different rows
    weights = (ids % 3 != 0) if weighted else None
    upstream = torch.randn(R, P, D, generator=generator)
    got = summed_level_embedding(ids, table, weights)
    want = per_level_sum(ids, table, weights)
    torch.testing.assert_close(got, want)
    (grad_got,) = torch.autograd.grad(got, table, upstream)
    (grad_want,) = torch.autograd.grad(want, table, upstream)
    torch.testing.assert_close(grad_got, grad_want)


def test_a_lookup_per_level_reads_each_level_from_its_own_table():
    table = torch.arange(C * V * D, dtype=torch.float32).view(C, V, D)
    ids = torch.randint(0, V, (R, P, C), generator=torch.Generator().manual_seed(1))
    vectors = level_lookup(ids, table)
    assert vectors.shape == (R, P, C, D)
    for level in range(C):
        torch.testing.assert_close(vectors[..., level, :], table[level][ids[..., level]])


def test_bf16_tables_give_bf16_vectors():
    table = torch.randn(C, V, D).to(torch.bfloat16)
    ids = torch.randint(0, V, (R, C, P))
    out = summed_level_embedding(ids, table, ids > 2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), per_level_sum(ids, table.float(), ids > 2), atol=0.05, rtol=0.02
    )
