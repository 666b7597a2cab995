-- Top n3 of every (competitor, direction, class) group by discrepancy, highest first;
-- ties go to the smaller image_id, so the same input always gives the same selection.
-- Variables: n3.

CREATE OR REPLACE TEMP VIEW ranked AS
WITH members AS MATERIALIZED (
    SELECT * FROM groups
),
group_thresholds AS (
    -- the n3-th highest d of each group: only members at or above it can rank, so the
    -- window below sorts a few rows per group instead of every member
    SELECT competitor, direction, class_id, list_min(max(d, getvariable('n3'))) AS min_d
    FROM members
    GROUP BY competitor, direction, class_id
),
contenders AS (
    SELECT members.*
    FROM members
    JOIN group_thresholds USING (competitor, direction, class_id)
    WHERE members.d >= group_thresholds.min_d
)
SELECT
    *,
    NULL::DOUBLE AS score,
    row_number() OVER (PARTITION BY competitor, direction, class_id ORDER BY d DESC, image_id) AS rank
FROM contenders
QUALIFY rank <= getvariable('n3');
