-- A MAD competition between models A and B (Wang et al. 2020), after groups.sql and
-- ranking.sql ran over the two models' maps: A stands as the 'target' (direction 'a': the
-- pool partitioned by A's map) and B as the one competitor (direction 'b': by B's map). Each
-- (direction, class k) group holds the images whose map has class k at an area fraction
-- inside the size bounds [p_k, q_k]; the top n3 of each group by d(A, B) are kept.
-- One row per kept image: the group it ranks best in (then the smaller class, then 'a'),
-- and its overall rank by d (ties: smaller image_id).
-- Variables: class_names (index = class id).

WITH kept AS (
    SELECT
        image_id,
        CASE direction WHEN 'target' THEN 'a' ELSE 'b' END AS direction,
        class_id,
        class_fraction,
        d,
        rank AS group_rank
    FROM ranked
),
best_group AS (
    SELECT *
    FROM kept
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY group_rank, class_id, direction) = 1
)
SELECT
    image_id,
    direction,
    class_id::INTEGER AS class_id,
    getvariable('class_names')[class_id + 1] AS class_name,
    class_fraction,
    d,
    group_rank::INTEGER AS group_rank,
    row_number() OVER (ORDER BY d DESC, image_id)::INTEGER AS rank
FROM best_group
ORDER BY rank;
