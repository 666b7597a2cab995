-- Hybrid selection: MAD's groups (competitor, direction, class inside the size bounds), each
-- ranked by the learned predictor's failure probability instead of d (d, then image_id,
-- break ties); the top n3 of each group.
-- Variables: n3.

CREATE OR REPLACE TEMP VIEW ranked AS
SELECT
    groups.*,
    predicted.p AS score,
    row_number() OVER (PARTITION BY competitor, direction, class_id
                       ORDER BY predicted.p DESC, groups.d DESC, groups.image_id) AS rank
FROM groups
JOIN predicted USING (image_id)
QUALIFY rank <= getvariable('n3');
