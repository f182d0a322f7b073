"""Score `ioc detect-file`'s methods on a local checkout of the Numenta Anomaly Benchmark (NAB).

    git clone https://github.com/numenta/NAB /tmp/nab      # data and labels are not shipped here
    .venv/bin/python bench/nab_eval.py /tmp/nab [--detector knn-range] [--procs 2]

Every data file is scored causally with :class:`detectors.univariate.UnivariateAnomalyScorer`,
then the corpus is scored the NAB v1.1 way, re-implemented here from the published rules (Lavin &
Ahmad 2015, "Evaluating real-time anomaly detection algorithms"): rows in the first 15 % of a file
(at most 750) are not scored; a detection inside a labelled window earns the scaled sigmoid of its
position (earliest is best, only the best one per window counts); a window without one costs the
FN weight; every detection outside a window costs the FP weight, less right after a window; one
threshold is chosen for the whole corpus per profile; 100 is perfect and 0 the null detector.
Published scores of other detectors are printed from the checkout's ``results/final_results.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.univariate import DEFAULT_METHOD, METHODS, UnivariateAnomalyScorer

#: profile -> (tp, fn, fp) weights
PROFILES = {"standard": (1.0, 1.0, 0.11), "reward_low_FP_rate": (1.0, 1.0, 0.22), "reward_low_FN_rate": (1.0, 2.0, 0.11)}


def _sig(x: float) -> float:
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _score_file(args: tuple[str, str]) -> tuple[str, list[str], np.ndarray, float]:
    path, method = args
    stamps, values = [], []
    with open(path, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            stamps.append(row[0])
            values.append(float(row[1]))
    scorer = UnivariateAnomalyScorer(method)
    t = time.perf_counter()
    out = np.array([scorer.score(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp(), v)
                    for s, v in zip(stamps, values, strict=True)])
    return path, stamps, out, time.perf_counter() - t


def row_weights(stamps: list[str], windows: list[list[str]], tp: float, fp: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the weight a detection there earns, and its window index (-1 outside, -2 probation)."""
    n = len(stamps)
    index = {s[:19]: i for i, s in enumerate(stamps)}
    spans = [(index[a[:19]], index[b[:19]]) for a, b in windows]
    weight, window = np.zeros(n), np.full(n, -1)
    prev: tuple[int, int] | None = None
    for i in range(n):
        inside = next((k for k, (a, b) in enumerate(spans) if a <= i <= b), None)
        if inside is not None:
            a, b = spans[inside]
            weight[i] = tp * _sig(-(b - i + 1) / (b - a + 1)) / _sig(-1.0)
            window[i] = inside
        else:
            weight[i] = fp * (-1.0 if prev is None else _sig(abs(prev[1] - i) / (prev[1] - prev[0])))
        if inside is not None and i == spans[inside][1]:
            prev = spans[inside]
    window[: int(min(math.floor(0.15 * n), 0.15 * 5000))] = -2
    return weight, window


def corpus_score(scores: dict[str, np.ndarray], stamps: dict[str, list[str]], labels: dict[str, list[list[str]]],
                 profile: str) -> tuple[float, float]:
    """(normalised score, threshold) with the threshold that maximises the corpus score."""
    tp, fn, fp = PROFILES[profile]
    s_all, w_all, win_all = [], [], []
    n_windows = 0
    for name, s in scores.items():
        w, win = row_weights(stamps[name], labels[name], tp, fp)
        keep = win != -2
        s_all.append(s[keep])
        w_all.append(w[keep])
        win_all.append(np.where(win[keep] >= 0, win[keep] + n_windows, -1))
        n_windows += len(labels[name])
    s, w, win = np.concatenate(s_all), np.concatenate(w_all), np.concatenate(win_all)
    order = np.argsort(-s, kind="stable")
    best_per_window = np.full(n_windows, -fn)
    fp_sum, total = 0.0, -fn * n_windows
    best, best_th = total, 1.1
    i = 0
    while i < len(order):
        th = s[order[i]]
        while i < len(order) and s[order[i]] == th:
            j = order[i]
            if win[j] < 0:
                fp_sum += w[j]
            elif w[j] > best_per_window[win[j]]:
                best_per_window[win[j]] = w[j]
            i += 1
        total = fp_sum + float(best_per_window.sum())
        if total > best:
            best, best_th = total, float(th)
    null, perfect = -fn * n_windows, tp * n_windows
    return 100.0 * (best - null) / (perfect - null), best_th


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nab", type=Path, help="path of a NAB checkout (with data/ and labels/)")
    ap.add_argument("--detector", choices=list(METHODS), default=DEFAULT_METHOD)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    labels_raw = json.loads((a.nab / "labels" / "combined_windows.json").read_text())
    files = {str(a.nab / "data" / name): name for name in sorted(labels_raw)}
    t0 = time.time()
    with ProcessPoolExecutor(a.procs) as pool:
        done = list(pool.map(_score_file, [(p, a.detector) for p in files]))
    scores = {files[p]: s for p, _, s, _ in done}
    stamps = {files[p]: st for p, st, _, _ in done}
    rows, cpu = sum(len(s) for s in scores.values()), sum(t for *_, t in done)
    print(f"{a.detector}: {len(files)} files, {rows} rows, {rows / cpu:,.0f} rows/s per core, {time.time() - t0:.0f} s")
    for profile in PROFILES:
        value, th = corpus_score(scores, stamps, labels_raw, profile)
        print(f"  {profile:20s} {value:6.2f}  (threshold {th:.4f})")
    published = a.nab / "results" / "final_results.json"
    if published.exists():
        print("published (results/final_results.json): standard / low FP / low FN")
        for det, r in sorted(json.loads(published.read_text()).items(), key=lambda kv: -kv[1]["standard"]):
            print(f"  {det:20s} {r['standard']:6.1f} {r['reward_low_FP_rate']:6.1f} {r['reward_low_FN_rate']:6.1f}")


if __name__ == "__main__":
    main()
