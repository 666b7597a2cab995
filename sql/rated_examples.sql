-- The learned predictor's examples: every image rated in a round before `round`, its mean
-- opinion score, whether that marks a failure (MOS at most failure_mos; NULL when a rater
-- marked it out of domain), whether it is out of domain, its perceptual hash (near-duplicates
-- are kept on one side of the held-out split), and the scoring run its round selected from
-- (where its features are; MAD's candidates first, as raters rate MAD's M).
-- Variables: round, failure_mos.

WITH votes AS (
    SELECT round, image_id, avg(score) AS mos, count(score) AS scores, count(*) - count(score) AS out_of_domain
    FROM ratings
    WHERE round < getvariable('round')
    GROUP BY round, image_id
),
runs AS (
    SELECT round, image_id, arg_min(run_id, (strategy <> 'mad')::INTEGER) AS run_id
    FROM candidates
    GROUP BY round, image_id
)
SELECT
    votes.round,
    votes.image_id,
    runs.run_id,
    votes.mos,
    CASE WHEN votes.out_of_domain = 0 THEN votes.mos <= getvariable('failure_mos') END AS failure,
    votes.out_of_domain > 0 AS out_of_domain,
    manifest.phash
FROM votes
JOIN runs USING (round, image_id)
LEFT JOIN manifest USING (image_id)
WHERE votes.out_of_domain > 0 OR votes.scores > 0
ORDER BY votes.round, votes.image_id;
