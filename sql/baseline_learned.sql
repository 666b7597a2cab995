-- Learned selection: the `budget` eligible images of highest predicted failure probability
-- (the predictor fitted on earlier rounds' ratings, registered as `predicted`); ties go to
-- the smaller image_id.
-- Variables: budget (|M| of MAD for the same round).

CREATE OR REPLACE TEMP VIEW baseline_ranked AS
SELECT
    image_id,
    p AS score,
    row_number() OVER (ORDER BY p DESC, image_id) AS rank
FROM predicted
ANTI JOIN exclusions USING (image_id)
QUALIFY rank <= getvariable('budget');
