import math

import numpy as np
import pandas as pd
import pytest

from ampere.retrieval.eval import DIRECTIONS, direction_hits, evaluate, markdown_table, metrics_from_embeddings_frame, recall_at_k

# Hand-computed case (ks 1, 2, 5):
# gallery g0 [1,0] a | g1 [0,1] b | g2 [1,0] c | g3 [-1,0] c | g4 [0,-1] d
# q0 [1,0] a : s+ = 1 (g0), other products >= 1: g2 (tie)            -> rank 2
# q1 [0,1] b : s+ = 1 (g1), none                                       -> rank 1
# q2 [1,0] z : product z has no gallery item                           -> excluded
# q3 [-1,0] c: own items score -1 (g2) and 1 (g3): s+ = 1, none        -> rank 1
# q4 [0,-1] c: own items both 0: s+ = 0; g0 (a, 0, tie) and g4 (d, 1)  -> rank 3
G_EMB = np.array([[1, 0], [0, 1], [1, 0], [-1, 0], [0, -1]], dtype=np.float32)
G_PID = ["a", "b", "c", "c", "d"]
Q_EMB = np.array([[1, 0], [0, 1], [1, 0], [-1, 0], [0, -1]], dtype=np.float32)
Q_PID = ["a", "b", "z", "c", "c"]


def test_recall_hand_computed_with_ties_and_exclusion():
    r = recall_at_k(Q_EMB, Q_PID, G_EMB, G_PID, ks=(1, 2, 5))
    assert r[1] == pytest.approx(50.0)
    assert r[2] == pytest.approx(75.0)
    assert r[5] == pytest.approx(100.0)
    assert r["MRR"] == pytest.approx(100.0 * (1 / 2 + 1 + 1 + 1 / 3) / 4)  # ranks 2, 1, 1, 3
    assert r["queries"] == 4
    assert r["excluded"] == 1


def test_recall_independent_of_gallery_order():
    perm = np.array([4, 2, 0, 3, 1])
    r = recall_at_k(Q_EMB, Q_PID, G_EMB[perm], [G_PID[i] for i in perm], ks=(1, 2, 5))
    assert r == recall_at_k(Q_EMB, Q_PID, G_EMB, G_PID, ks=(1, 2, 5))


def test_recall_matches_sorted_list_definition_without_ties():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(40, 8)), rng.normal(size=(60, 8))
    q_pid = [f"p{i}" for i in rng.integers(0, 25, 40)]
    g_pid = [f"p{i}" for i in rng.integers(0, 20, 60)]
    r = recall_at_k(q, q_pid, g, g_pid, ks=(1, 5, 10), chunk=7)
    order = np.argsort(-(q @ g.T), axis=1)
    valid = [i for i in range(40) if q_pid[i] in g_pid]
    for k in (1, 5, 10):
        hits = [any(g_pid[j] == q_pid[i] for j in order[i, :k]) for i in valid]
        assert r[k] == pytest.approx(100.0 * np.mean(hits))
    assert r["queries"] == len(valid) and r["excluded"] == 40 - len(valid)


def test_recall_no_counted_query_is_nan():
    r = recall_at_k(Q_EMB[:1], ["z"], G_EMB, G_PID)
    assert math.isnan(r[1]) and r["excluded"] == 1


def _dataset():
    """6 test products with one-hot embeddings; train items copy OTHER products' embeddings."""
    rows = []
    for p in range(6):
        for domain in ("page", "short", "live"):
            rows.append((f"p{p}", domain, "test", np.eye(8)[p]))
            # A train distractor identical to the next product: would tie if train items counted.
            rows.append((f"t{p}", domain, "train", np.eye(8)[(p + 1) % 6]))
    pids, domains, splits, emb = zip(*rows, strict=True)
    return np.stack(emb).astype(np.float32), list(pids), list(domains), list(splits)


def test_evaluate_keys_and_test_split_only():
    emb, pids, domains, splits = _dataset()
    m = evaluate(emb, pids, domains, splits)
    for d in DIRECTIONS:
        for k in (1, 5, 10):
            assert m[f"{d}/R@{k}"] == pytest.approx(100.0)
        assert m[f"{d}/queries"] == 6 and m[f"{d}/excluded"] == 0
    assert m["mR1"] == pytest.approx(100.0) and m["mMRR"] == pytest.approx(100.0)


def test_evaluate_mr1_is_mean_of_six_r1():
    emb, pids, domains, splits = _dataset()
    emb = emb.copy()
    # Live test item of p0 now equals p1's items: as a query (L2P, L2S) it misses once; as a
    # gallery item it misses p0's queries and ties with p1's own live item (P2L, S2L miss twice).
    live_p0 = [i for i, (p, d, s) in enumerate(zip(pids, domains, splits, strict=True)) if (p, d, s) == ("p0", "live", "test")]
    emb[live_p0] = np.eye(8)[1]
    m = evaluate(emb, pids, domains, splits)
    assert m["P2S/R@1"] == pytest.approx(100.0)
    assert m["L2P/R@1"] == pytest.approx(100 * 5 / 6)
    assert m["L2S/R@1"] == pytest.approx(100 * 5 / 6)
    assert m["P2L/R@1"] == pytest.approx(100 * 4 / 6)
    assert m["S2L/R@1"] == pytest.approx(100 * 4 / 6)
    assert m["mR1"] == pytest.approx(np.mean([m[f"{d}/R@1"] for d in DIRECTIONS]))
    assert m["mR1"] < 100.0


def test_markdown_table_and_frame_helper():
    emb, pids, domains, splits = _dataset()
    df = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(len(pids))],
            "product_id": pids,
            "domain": domains,
            "split": splits,
            "embedding": list(emb),
        }
    )
    m = metrics_from_embeddings_frame(df)
    assert m == evaluate(emb, pids, domains, splits)
    table = markdown_table(m).splitlines()
    assert table[0] == "| direction | R@1 | R@5 | R@10 |"
    assert [line.split("|")[1].strip() for line in table[2:]] == [*DIRECTIONS, "mR1"]
    assert table[-1].startswith("| mR1 | 100.0 |")


def test_evaluate_one_split_at_a_time_and_direction_hits():
    """Each split is a world of its own: queries and galleries never mix splits."""
    emb, pids, domains, splits = _dataset()
    assert evaluate(emb, pids, domains, splits, split="test")["mR1"] == pytest.approx(100.0)
    assert evaluate(emb, pids, domains, splits, split="train")["mR1"] == pytest.approx(100.0)  # t_p's items share one vector
    swapped = [("train" if s == "test" else "val") for s in splits]
    assert evaluate(emb, pids, domains, swapped, split="val")["mR1"] == pytest.approx(100.0)
    assert evaluate(emb, pids, domains, swapped, split="test")["P2S/queries"] == 0
    hits = direction_hits(emb, pids, domains, splits)
    assert set(hits) == set(DIRECTIONS)
    assert sorted(hits["P2S"]["product_id"]) == [f"p{p}" for p in range(6)] and hits["P2S"]["hit"].all()
