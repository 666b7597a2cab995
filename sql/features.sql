-- What the learned failure predictor sees of an image: only what scoring already stored.
-- Per image of the run: d against the competitors (largest, mean, smallest), the target's
-- mean pixel entropy and max-softmax (NULL for a maps model), the target's object area, its
-- main class's area and how many object classes it predicts, how far the target's class
-- areas are from the competitors' (total variation, mean over competitors) and how far the
-- competitors' are from each other's (mean over pairs: agreement among competitors).
-- Needs the views of run_inputs.sql.

CREATE OR REPLACE TEMP VIEW image_features AS
WITH fractions AS (
    SELECT image_id, model, role, mean_entropy, mean_msp,
           list_transform(class_pixels, lambda n: n / (height::DOUBLE * width)) AS f
    FROM run_predictions
),
target AS (
    SELECT * FROM fractions WHERE role = 'target'
),
competitors AS (
    SELECT * FROM fractions WHERE role = 'competitor'
),
target_vs_competitors AS (
    SELECT target.image_id,
           avg(0.5 * list_sum(list_transform(range(1, len(target.f) + 1),
                                             lambda i: abs(target.f[i] - competitors.f[i])))) AS target_competitor_tv
    FROM target JOIN competitors USING (image_id)
    GROUP BY target.image_id
),
among_competitors AS (
    SELECT a.image_id,
           avg(0.5 * list_sum(list_transform(range(1, len(a.f) + 1), lambda i: abs(a.f[i] - b.f[i])))) AS competitor_tv
    FROM competitors AS a JOIN competitors AS b ON a.image_id = b.image_id AND a.model < b.model
    GROUP BY a.image_id
),
discrepancies AS (
    SELECT image_id, max(d) AS d_max, avg(d) AS d_mean, min(d) AS d_min
    FROM run_pairs
    GROUP BY image_id
)
SELECT
    target.image_id,
    discrepancies.d_max,
    discrepancies.d_mean,
    discrepancies.d_min,
    target.mean_entropy AS target_entropy,
    target.mean_msp AS target_msp,
    1 - target.f[1] AS object_fraction,
    coalesce(list_max(target.f[2:]), 0) AS main_class_fraction,
    len(list_filter(target.f[2:], lambda x: x > 0))::DOUBLE AS object_classes,
    target_vs_competitors.target_competitor_tv,
    among_competitors.competitor_tv
FROM target
LEFT JOIN discrepancies USING (image_id)
LEFT JOIN target_vs_competitors USING (image_id)
LEFT JOIN among_competitors USING (image_id);
