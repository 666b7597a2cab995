-- Random baseline: `budget` eligible images in a seeded order that depends only on the
-- seed and each image_id (md5 of '<seed>:<image_id>'), never on file or row order.
-- Variables: budget (|M| of MAD for the same round), seed.

CREATE OR REPLACE TEMP VIEW baseline_ranked AS
WITH eligible_images AS (
    SELECT DISTINCT image_id
    FROM run_predictions
    ANTI JOIN exclusions USING (image_id)
    WHERE role = 'target'
),
shuffled AS (
    SELECT image_id, md5(getvariable('seed')::VARCHAR || ':' || image_id) AS draw
    FROM eligible_images
)
SELECT
    image_id,
    NULL::DOUBLE AS score,
    row_number() OVER (ORDER BY draw, image_id) AS rank
FROM shuffled
QUALIFY rank <= getvariable('budget');
