"""The NumPy tree walks gpuserve serves scikit-learn forests and HistGradientBoosting through
(gpuserve/classic_forest.py, classic_boosting.py) against scikit-learn's own calls, in one process, us a
call, for finite rows and for rows with a missing value (NaN in one feature). Answers are checked equal
before timing. Run:
    .venv/bin/python benchmarks/tree_walk_bench.py [--rows 1,16,64] [--features 32]
Models as in backend_bench: 50 trees of depth 8 (forest), 50 iterations (HGB), two classes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def per_call_us(call, calls: int) -> float:
    for _ in range(max(calls // 20, 5)):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return round((time.perf_counter() - start) / calls * 1e6, 1)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from gpuserve.classic_boosting import BoostingPredictor
    from gpuserve.classic_forest import ForestPredictor

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,16,64", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--features", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, args.features)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0).fit(x, y)
    boosting = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(x, y)
    walks = {"forest": (forest, ForestPredictor.for_estimator(forest)),
             "hgb": (boosting, BoostingPredictor.for_estimator(boosting))}
    for name, (estimator, walk) in walks.items():
        for rows in args.rows:
            finite = x[:rows].copy()
            missing = finite.astype(np.float64)
            missing[:, 3] = np.nan
            row = {"model": name, "rows": rows, "takes_nan": bool(getattr(walk, "takes_nan", True))}
            calls = 2000 if rows == 1 else 500
            for label, q in (("finite", finite), ("nan", missing)):
                got = walk.run("predict_proba", q)
                want = estimator.predict_proba(q)
                if got is not None:
                    assert np.array_equal(got, want), (name, rows, label)
                    row[f"walk_{label}_us"] = per_call_us(lambda: walk.run("predict_proba", q), calls)
                row[f"sklearn_{label}_us"] = per_call_us(lambda: estimator.predict_proba(q), max(calls // 20, 20))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
