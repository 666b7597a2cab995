"""An independent, pure-Python reading of step 2 of the method, docs/paper.md, for checking the SQL.

Written from the text of the method with plain loops over rows (no SQL, no DuckDB), so
that a mistake in sql/*.sql cannot hide behind the same mistake here:

  For each competitor j and each direction (partition by the target's map, then by g_j's
  map): image x is in group k (k = 1..c-1) when the partitioning map has class k and its
  fraction pixels_k / (h*w) lies in [p_k, q_k] (inclusive). In each (j, direction, k)
  group keep the top n3 by d descending, ties broken by image_id ascending. Images already
  rated in an earlier round, labelled, or in a test set are excluded before ranking;
  near-duplicates (perceptual hashes within phash_distance bits) count once: the smallest
  image_id is kept. Images with no d never rank.
"""

from __future__ import annotations

import hashlib


def excluded_images(
    run_images: set[str],
    phash: dict[str, int],
    rated: list[tuple[int, str]],
    labelled: set[str],
    test_set: set[str],
    round_: int,
    phash_distance: int,
) -> dict[str, set[str]]:
    """reason -> images of the run excluded for it."""
    reasons = {
        "rated": {i for r, i in rated if r < round_ and i in run_images},
        "labelled": labelled & run_images,
        "test_set": test_set & run_images,
        "near_duplicate": set(),
    }
    hashed = sorted(i for i in run_images if phash.get(i) is not None)
    for x in hashed:
        for y in hashed:
            if y >= x:
                break
            if bin(phash[x] ^ phash[y]).count("1") <= phash_distance:
                reasons["near_duplicate"].add(x)
                break
    return reasons


def mad_candidates(
    predictions: list[dict],
    pairs: list[dict],
    bounds: dict[int, tuple[float, float] | None],
    uris: dict[str, str],
    excluded: set[str],
    n3: int,
    round_: int,
    class_ids: list[int],
    class_names: list[str],
    score: dict[str, float] | None = None,
) -> list[dict]:
    """The candidates rows (the columns of docs/architecture.md, "Tables"), ordered by competitor, direction, class, rank.
    With `score` (image_id -> predicted failure) the groups rank by it, then d, then image_id: the hybrid."""
    target_rows = {r["image_id"]: r for r in predictions if r["role"] == "target"}
    competitor_rows = {(r["model"], r["image_id"]): r for r in predictions if r["role"] == "competitor"}
    d_of = {(p["competitor"], p["image_id"]): p["d"] for p in pairs}
    competitors = sorted({p["competitor"] for p in pairs})
    rows = []
    for j in competitors:
        for direction in ("competitor", "target"):
            for k in sorted(class_ids):
                if k < 1 or bounds.get(k) is None:
                    continue
                p_k, q_k = bounds[k]
                members = []
                for image_id in sorted(target_rows):
                    if image_id in excluded:
                        continue
                    d = d_of.get((j, image_id))
                    if d is None:
                        continue
                    row = target_rows[image_id] if direction == "target" else competitor_rows.get((j, image_id))
                    if row is None:
                        continue
                    pixels = row["class_pixels"][k]
                    fraction = pixels / (row["height"] * row["width"])
                    if pixels > 0 and p_k <= fraction <= q_k:
                        members.append((d, image_id, fraction))
                if score is None:
                    members.sort(key=lambda m: (-m[0], m[1]))
                else:
                    members.sort(key=lambda m: (-score[m[1]], -m[0], m[1]))
                for rank, (d, image_id, fraction) in enumerate(members[:n3], start=1):
                    rows.append(
                        {
                            "round": round_,
                            "image_id": image_id,
                            "uri": uris.get(image_id),
                            "competitor": j,
                            "direction": direction,
                            "class_id": k,
                            "class_name": class_names[k],
                            "class_fraction": fraction,
                            "d": d,
                            "rank": rank,
                        }
                    )
    return rows


def main_object_class(row: dict) -> tuple[int | None, float | None]:
    """The class with most pixels among k >= 1 (smallest id on ties) and its fraction."""
    pixels = row["class_pixels"]
    best = None
    for k in range(1, len(pixels)):
        if pixels[k] > 0 and (best is None or pixels[k] > pixels[best]):
            best = k
    if best is None:
        return None, None
    return best, pixels[best] / (row["height"] * row["width"])


def baseline_candidates(
    strategy: str,
    predictions: list[dict],
    uris: dict[str, str],
    excluded: set[str],
    budget: int,
    round_: int,
    class_names: list[str],
    seed: int,
) -> list[dict]:
    """entropy (highest first), msp (lowest first) or random (md5 of 'seed:image_id')."""
    targets = [r for r in predictions if r["role"] == "target" and r["image_id"] not in excluded]
    if strategy == "entropy":
        keyed = [((-r["mean_entropy"], r["image_id"]), r, r["mean_entropy"]) for r in targets if r["mean_entropy"] is not None]
    elif strategy == "msp":
        keyed = [((r["mean_msp"], r["image_id"]), r, r["mean_msp"]) for r in targets if r["mean_msp"] is not None]
    else:
        keyed = [
            ((hashlib.md5(f"{seed}:{r['image_id']}".encode()).hexdigest(), r["image_id"]), r, None) for r in targets
        ]
    keyed.sort(key=lambda t: t[0])
    rows = []
    for rank, (_, r, score) in enumerate(keyed[:budget], start=1):
        class_id, fraction = main_object_class(r)
        rows.append(
            {
                "round": round_,
                "image_id": r["image_id"],
                "uri": uris.get(r["image_id"]),
                "competitor": None,
                "direction": "target",
                "class_id": class_id,
                "class_name": class_names[class_id] if class_id is not None else None,
                "class_fraction": fraction,
                "d": None,
                "rank": rank,
                "score": score,
            }
        )
    return rows
