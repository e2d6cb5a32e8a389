#!/usr/bin/env python3
"""Plain numpy baseline for `burn-set rbm` timings (not part of the build or the tests).

Times one epoch of CD-k on dna (1,600 samples, batch 10, 180 x 250, momentum 0.9, weight
decay 0.0002, masked sparse or dense weights) and one AIS estimate of log Z (M runs x the
14,500-step schedule), written the obvious way with numpy (float64 by default), so that
burn-set's numbers can be compared with a baseline measured on the same machine at the same
time.

Usage: python3 scripts/rbm_numpy_baseline.py [--epochs 5] [--cd-k 3] [--hidden 250]
           [--ais-runs 100] [--ais-betas 14500] [--float32] [--data DIR]
"""

import argparse
import gzip
import os
import time

import numpy as np


def load(path):
    with gzip.open(path, "rt") as f:
        return np.array([[float(x) for x in line.split(",")] for line in f if line.strip()])


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def betas(n):
    n1 = max(1, round(n * 500 / 14500))
    n2 = max(1, round(n * 4000 / 14500))
    n3 = max(1, n - n1 - n2)
    return np.concatenate([
        np.linspace(0, 0.5, n1, endpoint=False),
        np.linspace(0.5, 0.9, n2, endpoint=False),
        np.linspace(0.9, 1.0, n3 + 1),
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__),
                                                   "../crates/burn-set/fixtures/binary-density"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cd-k", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--ais-runs", type=int, default=100)
    ap.add_argument("--ais-betas", type=int, default=14500)
    ap.add_argument("--float32", action="store_true")
    ap.add_argument("--dense", action="store_true", help="no mask (default: ER mask, eps 11)")
    a = ap.parse_args()
    dt = np.float32 if a.float32 else np.float64
    rng = np.random.default_rng(0)
    x = load(os.path.join(a.data, "dna.train.data.gz")).astype(dt)
    n, nv = x.shape
    nh = a.hidden
    mask = np.ones((nv, nh), dt)
    if not a.dense:
        mask = (rng.random((nv, nh)) < 11 * (nv + nh) / (nv * nh)).astype(dt)
    W = (rng.standard_normal((nv, nh)) * 0.05).astype(dt) * mask
    p = np.clip(x.mean(0), 1e-3, 1 - 1e-3)
    b = np.log(p / (1 - p)).astype(dt)
    c = np.zeros(nh, dt)
    vW, vb, vc = np.zeros_like(W), np.zeros_like(b), np.zeros_like(c)
    lr, mom, wd = 0.01, 0.9, 0.0002
    times = []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        for s in range(0, n, a.batch_size):
            v0 = x[order[s:s + a.batch_size]]
            m = v0.shape[0]
            ph0 = sig(v0 @ W + c)
            h = (rng.random(ph0.shape) < ph0).astype(dt)
            for k in range(a.cd_k):
                pv = sig(h @ W.T + b)
                v = (rng.random(pv.shape) < pv).astype(dt)
                ph = sig(v @ W + c)
                if k + 1 < a.cd_k:
                    h = (rng.random(ph.shape) < ph).astype(dt)
            dW = (v0.T @ ph0 - v.T @ ph) / m * mask
            vW = mom * vW + lr * (dW - wd * W)
            vb = mom * vb + lr * ((v0 - v).mean(0) - wd * b)
            vc = mom * vc + lr * ((ph0 - ph).mean(0) - wd * c)
            W += vW
            b += vb
            c += vc
        times.append(time.perf_counter() - t0)
    print(f"numpy {'float32' if a.float32 else 'float64'} CD-{a.cd_k} {nv}x{nh} batch "
          f"{a.batch_size}: {np.mean(times):.4f} s/epoch (epochs: {', '.join(f'{t:.4f}' for t in times)})")

    # AIS from the base-rate model.
    t0 = time.perf_counter()
    bs = betas(a.ais_betas)
    pa = (x.sum(0) + 0.5) / (n + 1)
    ba = np.log(pa / (1 - pa)).astype(dt)
    M = a.ais_runs
    v = (rng.random((M, nv)) < sig(ba)).astype(dt)
    logw = np.zeros(M)
    for k in range(1, len(bs)):
        bp, bk = bs[k - 1], bs[k]
        act = v @ W + c
        logw += (bk - bp) * (v @ (b - ba)) + (np.logaddexp(0, bk * act) - np.logaddexp(0, bp * act)).sum(1)
        if k < len(bs) - 1:
            h = (rng.random(act.shape) < sig(bk * act)).astype(dt)
            v = (rng.random((M, nv)) < sig(bk * (h @ W.T + b) + (1 - bk) * ba)).astype(dt)
    logz_a = nh * np.log(2) + np.logaddexp(0, ba).sum()
    mx = logw.max()
    logz = logz_a + mx + np.log(np.mean(np.exp(logw - mx)))
    print(f"numpy AIS {M} runs x {len(bs) - 1} steps: {time.perf_counter() - t0:.2f} s (log Z {logz:.3f})")


if __name__ == "__main__":
    main()
