-- Entropy baseline: the `budget` eligible images on which the target is least certain,
-- by highest mean pixel entropy; ties go to the smaller image_id.
-- Variables: budget (|M| of MAD for the same round).

CREATE OR REPLACE TEMP VIEW baseline_ranked AS
WITH target_uncertainty AS (
    SELECT image_id, mean_entropy AS score
    FROM run_predictions
    ANTI JOIN exclusions USING (image_id)
    WHERE role = 'target' AND mean_entropy IS NOT NULL
)
SELECT
    image_id,
    score,
    row_number() OVER (ORDER BY score DESC, image_id) AS rank
FROM target_uncertainty
QUALIFY rank <= getvariable('budget');
