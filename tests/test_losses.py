import math

import pytest
import torch

from ampere.training.losses import cross_domain_loss, info_nce


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


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_alignment_terms_use_only_items_with_text():
    from ampere.training.alignment import alignment_losses

    visual = tuple(_unit(5, 8, seed=i) for i in range(3))
    text = tuple(_unit(5, 8, seed=10 + i) for i in range(3))
    has = (
        torch.tensor([True, True, True, True, True]),
        torch.tensor([True, False, True, False, True]),
        torch.tensor([False, False, False, False, True]),  # one item with text: no L text<->visual term
    )
    parts = alignment_losses(visual, text, has, 0.1)
    assert set(parts) == {"loss_tv", "loss_vv", "loss_tt"}
    tv = info_nce(visual[0], text[0], 0.1) + info_nce(visual[1][has[1]], text[1][has[1]], 0.1)
    assert math.isclose(parts["loss_tv"].item(), tv.item(), rel_tol=1e-6)
    vv = info_nce(visual[0], visual[1], 0.1) + info_nce(visual[0], visual[2], 0.1) + info_nce(visual[1], visual[2], 0.1)
    assert math.isclose(parts["loss_vv"].item(), vv.item(), rel_tol=1e-6)
    both = has[0] & has[1]  # P-L and S-L share one item with text: no term
    assert math.isclose(parts["loss_tt"].item(), info_nce(text[0][both], text[1][both], 0.1).item(), rel_tol=1e-6)
    # Text of items without text never matters.
    noise = tuple(_unit(5, 8, seed=50 + i) for i in range(3))
    changed = tuple(torch.where(h[:, None], t, n) for t, n, h in zip(text, noise, has, strict=True))
    again = alignment_losses(visual, changed, has, 0.1)
    for key, value in parts.items():
        assert math.isclose(again[key].item(), value.item(), rel_tol=1e-6)


def test_cosface_margin_and_scale():
    from ampere.training.cosface import CosFace

    head = CosFace(4, 3)
    assert (head.scale, head.margin) == (64.0, 0.4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.eye(3, 4)[[0, 1]]
    labels = torch.tensor([0, 1])
    # Correct class: cos 1 - margin; two others: cos 0.
    expected = math.log(1 + 2 * math.exp(-64 * 0.6))
    assert math.isclose(head(emb, labels).item(), expected, rel_tol=1e-4, abs_tol=1e-12)
    wrong = torch.tensor([1, 2])
    assert head(emb, wrong).item() > 60  # s * (1 + m) against the true-class logit
    torch.testing.assert_close(head.cosine(3 * emb), head.cosine(emb))
    head(_unit(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()


def test_learnable_temperature_is_clamped():
    from ampere.training.losses import TEMPERATURE_RANGE, Temperature

    t = Temperature(0.05)
    assert math.isclose(t().item(), 0.05, rel_tol=1e-6)
    info_nce(_unit(4, 8), _unit(4, 8, seed=1), t()).backward()
    assert t.log_temperature.grad is not None
    with torch.no_grad():
        t.log_temperature.fill_(-20.0)
    assert math.isclose(t().item(), TEMPERATURE_RANGE[0], rel_tol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        Temperature(5.0)
