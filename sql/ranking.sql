-- Top n3 of every (competitor, direction, class) group by discrepancy, highest first;
-- ties go to the smaller image_id, so the same input always gives the same selection.
-- Variables: n3.
--
-- One streaming aggregate: each group keeps only its n3 best members so far, ordered by
-- (-d, image_id), so memory does not grow with the corpus (a window over every member
-- held all of them: 85M rows at 10M images). The top n3 of a union is the top n3 of its
-- parts' top n3s: a large run is ranked a part at a time (madmine select binds each part's
-- files), then top_by_discrepancy ranks the parts' winners once more (ranking_merge.sql).

CREATE OR REPLACE TEMP MACRO top_by_discrepancy(members) AS TABLE
WITH kept AS (
    SELECT
        competitor,
        direction,
        class_id,
        min_by(
            struct_pack(image_id, class_fraction, d),
            struct_pack(neg_d := -d, image_id := image_id),
            getvariable('n3')
        ) AS best
    FROM query_table(members)
    GROUP BY competitor, direction, class_id
),
unnested AS (
    SELECT competitor, direction, class_id, unnest(best) AS member, generate_subscripts(best, 1) AS rank
    FROM kept
)
SELECT
    competitor,
    direction,
    class_id,
    member.image_id,
    member.class_fraction,
    member.d,
    NULL::DOUBLE AS score,
    rank
FROM unnested;

CREATE OR REPLACE TEMP VIEW ranked AS
SELECT * FROM top_by_discrepancy('groups');
