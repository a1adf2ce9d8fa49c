"""benchmarks/near_dup.py's scoring, by hand: planted pairs, hard negatives, a near-duplicate
the corpus already held (a right removal) and an unrelated removal (a wrong one)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_recall_precision_per_bin_by_hand():
    from near_dup import score

    sh = {"x": set(range(100)), "y": set(range(5, 100)),  # J 95/100: the corpus's own near-duplicate
          "o": set(range(200, 300)), "c": set(range(200, 290)),  # planted pair (J 0.90)
          "n1": set(range(400, 500)), "n2": set(range(420, 520)),  # hard negatives, J 80/120
          "z": set(range(1000, 1050))}  # like nothing else
    docs = [{"id": k} for k in sh]
    pairs = [{"original": "o", "copy": "c", "bin": "0.90", "split": "dev", "jaccard": 0.9}]
    negs = [{"members": ["n1", "n2"], "max_jaccard": [round(80 / 120, 4)] * 2, "split": "dev"}]
    r = score({"x", "o", "n1"}, docs, pairs, negs, sh)["all"]
    # removed: y (right, natural), c (right, planted), n2 (wrong: a hard negative), z (wrong)
    assert (r["removed"], r["precision"], r["natural_removed"]) == (4, 0.5, 1)
    assert (r["pairs"], r["recall"], r["hard_negatives"], r["hard_negatives_removed"]) == (1, 1.0, 2, 1)
    b = r["bins"]
    assert b["0.90"] == {"pairs": 1, "recall": 1.0, "removed": 1, "precision": 1.0}
    assert b[">=0.95"] == {"removed": 1, "precision": 1.0, "natural_removed": 1}
    assert b["0.65"] == {"removed": 1, "precision": 0.0, "hard_negatives": 2, "hard_negatives_removed": 1}
    assert b["<0.50"] == {"removed": 1, "precision": 0.0}
    # both copies gone: the pair is not recalled, and the removals are not right
    r = score({"x", "n1", "n2", "z", "y"}, docs, pairs, negs, sh)["all"]
    assert (r["recall"], r["removed"], r["precision"]) == (0.0, 2, 0.0)
