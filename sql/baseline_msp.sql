-- Max-softmax baseline: the `budget` eligible images of lowest mean max-softmax
-- probability of the target; ties go to the smaller image_id.
-- Variables: budget (|M| of MAD for the same round).

CREATE OR REPLACE TEMP VIEW baseline_ranked AS
WITH target_confidence AS (
    SELECT image_id, mean_msp AS score
    FROM run_predictions
    ANTI JOIN exclusions USING (image_id)
    WHERE role = 'target' AND mean_msp IS NOT NULL
)
SELECT
    image_id,
    score,
    row_number() OVER (ORDER BY score ASC, image_id) AS rank
FROM target_confidence
QUALIFY rank <= getvariable('budget');
