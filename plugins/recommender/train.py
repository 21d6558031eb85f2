#!/usr/bin/env python3
"""Trains the `recommender` example model and writes its weights and test reference.

    pip install numpy safetensors
    python3 plugins/recommender/train.py

A matrix-factorization recommender (user and item embeddings of dimension 16
plus a per-item bias) trained with BPR (Bayesian personalized ranking) by
minibatch SGD on a synthetic implicit-feedback data set: 200 users x 500
items, each user interacting with ~30 items drawn from a hidden low-rank
preference model plus item popularity and noise. One interaction per user is
held out; the script prints hit-rate@10 on those against a popularity
baseline, so the model is checked to have learned something.

Outputs:

* examples/models/recommender/1/model.safetensors: FP32 `user_factors`
  [users, 16], `item_factors` [items, 16], `item_bias` [items].
* tests/data/recommender_reference.json: 10 users with k and numpy's float32
  top-k item ids and scores (score = user · item + bias), for the
  end-to-end tests.

Everything is seeded, so reruns give the same files.
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "examples" / "models" / "recommender" / "1" / "model.safetensors"
REFERENCE = REPO / "tests" / "data" / "recommender_reference.json"
SEED = 0
USERS, ITEMS = 200, 500
TRUE_DIM, DIM = 8, 16
PER_USER = 30
K = 10
N_REFERENCE = 10
# Reference users are picked so that no two of their top-(k+1) scores are
# closer than this: the server's float32 matmul may round differently from
# numpy's, and a near-tie could otherwise swap two items.
MIN_GAP = 1e-3


def synthesize(rng: np.random.Generator) -> list[np.ndarray]:
    """Each user's interacted items (distinct), from a hidden low-rank model."""
    u = rng.normal(size=(USERS, TRUE_DIM))
    v = rng.normal(size=(ITEMS, TRUE_DIM))
    popularity = rng.normal(scale=1.0, size=ITEMS)
    logits = 1.5 * (u @ v.T) / np.sqrt(TRUE_DIM) + popularity
    logits += rng.normal(scale=0.5, size=logits.shape)  # noise
    interactions = []
    for user in range(USERS):
        p = np.exp(logits[user] - logits[user].max())
        p /= p.sum()
        n = PER_USER + int(rng.integers(-10, 11))
        interactions.append(rng.choice(ITEMS, size=n, replace=False, p=p))
    return interactions


def train_bpr(train: list[np.ndarray], rng: np.random.Generator) -> dict:
    users = np.concatenate([np.full(len(items), u) for u, items in enumerate(train)])
    positives = np.concatenate(train)
    seen = np.zeros((USERS, ITEMS), dtype=bool)
    seen[users, positives] = True

    p = rng.normal(scale=0.1, size=(USERS, DIM))
    q = rng.normal(scale=0.1, size=(ITEMS, DIM))
    b = np.zeros(ITEMS)
    lr, reg, batch = 0.05, 0.01, 256
    for _epoch in range(60):
        order = rng.permutation(len(users))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            u, i = users[idx], positives[idx]
            j = rng.integers(0, ITEMS, size=len(idx))
            keep = ~seen[u, j]
            u, i, j = u[keep], i[keep], j[keep]
            pu, qi, qj = p[u], q[i], q[j]
            x = np.sum(pu * (qi - qj), axis=1) + b[i] - b[j]
            g = 1.0 / (1.0 + np.exp(x))  # d log sigmoid(x) / dx
            np.add.at(p, u, lr * (g[:, None] * (qi - qj) - reg * pu))
            np.add.at(q, i, lr * (g[:, None] * pu - reg * qi))
            np.add.at(q, j, lr * (-g[:, None] * pu - reg * qj))
            np.add.at(b, i, lr * (g - reg * b[i]))
            np.add.at(b, j, lr * (-g - reg * b[j]))
    return {
        "user_factors": p.astype(np.float32),
        "item_factors": q.astype(np.float32),
        "item_bias": b.astype(np.float32),
    }


def scores_f32(weights: dict, users: np.ndarray) -> np.ndarray:
    """The handler's computation, in float32 numpy."""
    return weights["user_factors"][users] @ weights["item_factors"].T + weights["item_bias"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest first; equal scores rank by lower item id (as the host does)."""
    order = np.lexsort((np.arange(scores.shape[-1]), -scores))[:k]
    return order, scores[order]


def hit_rate(rank_scores: np.ndarray, train: list[np.ndarray], held_out: np.ndarray) -> float:
    """Fraction of users whose held-out item is in the top 10 of unseen items."""
    hits = 0
    for user in range(USERS):
        s = rank_scores[user].astype(np.float64).copy()
        s[train[user]] = -np.inf
        hits += held_out[user] in np.argsort(-s, kind="stable")[:K]
    return hits / USERS


def main() -> None:
    rng = np.random.default_rng(SEED)
    interactions = synthesize(rng)
    held_out = np.array([items[0] for items in interactions])
    train = [items[1:] for items in interactions]

    weights = train_bpr(train, rng)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(WEIGHTS))
    weights = load_file(str(WEIGHTS))  # exactly what the server will load

    all_scores = scores_f32(weights, np.arange(USERS))
    counts = np.bincount(np.concatenate(train), minlength=ITEMS).astype(np.float64)
    random_hr = K / (ITEMS - PER_USER)
    model_hr = hit_rate(all_scores, train, held_out)
    pop_hr = hit_rate(np.tile(counts, (USERS, 1)), train, held_out)
    print(f"interactions: {sum(map(len, interactions))} ({USERS} users x {ITEMS} items)")
    print(f"hit-rate@{K} on held-out interactions (seen items excluded):")
    print(f"  matrix factorization: {model_hr:.3f}")
    print(f"  popularity baseline:  {pop_hr:.3f}")
    print(f"  random:               {random_hr:.3f}")

    reference = []
    for user in range(USERS):
        s = all_scores[user]
        ids, _ = top_k(s, K + 1)
        top = np.sort(s[ids])[::-1]
        if np.min(top[:-1] - top[1:]) < MIN_GAP:
            continue
        ids, values = top_k(s, K)
        reference.append(
            {
                "user_id": user,
                "items": [int(i) for i in ids],
                "scores": [float(v) for v in values],
            }
        )
        if len(reference) == N_REFERENCE:
            break
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(
        json.dumps({"k": K, "items": ITEMS, "users": USERS, "reference": reference}, indent=1)
        + "\n"
    )
    print(f"wrote {WEIGHTS.relative_to(REPO)} ({WEIGHTS.stat().st_size} bytes)")
    print(f"wrote {REFERENCE.relative_to(REPO)} ({len(reference)} users)")


if __name__ == "__main__":
    main()
