import math

import torch

from ampere.losses import cross_domain_loss, info_nce


def test_info_nce_perfect_alignment_hand_value():
    a = torch.eye(4)
    # Each row: correct logit 1/0.05 = 20, three wrong logits 0.
    expected = math.log(1 + 3 * math.exp(-20.0))
    assert math.isclose(info_nce(a, a, 0.05).item(), expected, rel_tol=1e-4, abs_tol=1e-7)


def test_info_nce_permuted_is_large():
    a = torch.eye(4)
    b = a[[1, 2, 3, 0]]  # no row matches its partner
    # Each row: correct logit 0, one wrong logit 20, two wrong logits 0.
    expected = math.log(math.exp(20.0) + 3)
    assert math.isclose(info_nce(a, b, 0.05).item(), expected, rel_tol=1e-5)
    assert info_nce(a, b).item() > info_nce(a, a).item() + 10


def test_info_nce_uniform_and_symmetric():
    same = torch.nn.functional.normalize(torch.ones(5, 3), dim=-1)
    assert math.isclose(info_nce(same, same).item(), math.log(5), rel_tol=1e-5)
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    assert math.isclose(info_nce(a, b).item(), info_nce(b, a).item(), rel_tol=1e-6)


def test_cross_domain_loss_sums_three_pairs():
    g = torch.Generator().manual_seed(1)
    p, s, l = (torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1) for _ in range(3))  # noqa: E741
    total, parts = cross_domain_loss(p, s, l, 0.1)
    assert set(parts) == {"loss_ps", "loss_pl", "loss_sl"}
    assert math.isclose(parts["loss_pl"].item(), info_nce(p, l, 0.1).item(), rel_tol=1e-6)
    assert math.isclose(total.item(), sum(v.item() for v in parts.values()), rel_tol=1e-6)
