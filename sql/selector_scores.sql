-- What every selector `madmine evaluate --selectors` judges sees of each image of the bound run:
-- d against the competitors (largest, mean), the target's mean entropy and max-softmax, and the
-- image's best rank in MAD's groups (competitor, direction, class inside the size bounds, ranked by
-- d; NULL when it is in no group). No exclusion applies: a selector is judged over the whole corpus.
-- Needs the views of run_inputs.sql and features.sql, and groups.sql over an empty `exclusions`.

WITH ranked_members AS (
    SELECT image_id,
           row_number() OVER (PARTITION BY competitor, direction, class_id ORDER BY d DESC, image_id) AS rank
    FROM groups
),
best_rank AS (
    SELECT image_id, min(rank) AS mad_rank
    FROM ranked_members
    GROUP BY image_id
)
SELECT image_features.image_id, d_max, d_mean, target_entropy, target_msp, best_rank.mad_rank
FROM image_features
LEFT JOIN best_rank USING (image_id)
ORDER BY image_features.image_id;
