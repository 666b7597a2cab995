-- Images of the run that never enter a ranking (step 2 of the method, docs/paper.md), with the reason:
-- rated in an earlier round, labelled, in a test set, or a near-duplicate.
-- An image may have several reasons; it is excluded once.
-- "Rated" follows [selection] exclude_rated: every image rated in an earlier round (true), or
-- only those a rater marked out of domain (false: rated images that S did not take may enter a
-- later M again, as in the paper). "Labelled" leaves out the images labelled only because
-- another strategy's S holds them (table other_strategies_s), so a baseline never changes
-- what MAD selects.
-- Variables: round, phash_distance (0: identical hashes only), exclude_rated.

CREATE OR REPLACE TEMP TABLE exclusions AS
WITH rated_earlier AS (
    SELECT DISTINCT image_id, 'rated' AS reason
    FROM ratings
    WHERE round < getvariable('round')
      AND (getvariable('exclude_rated') OR score IS NULL)
),
labelled AS (
    SELECT DISTINCT image_id, 'labelled' AS reason
    FROM labels
    ANTI JOIN other_strategies_s USING (image_id)
),
in_test_set AS (
    SELECT DISTINCT image_id, 'test_set' AS reason
    FROM testsets
),
-- Near-duplicates by perceptual hash: an image is dropped when an image of the run with a
-- smaller image_id lies within phash_distance bits of it, so a group of identical hashes
-- keeps its smallest image_id. Identical hashes are settled by a window; distinct hashes
-- within t bits agree exactly on at least one of t + 1 disjoint bit blocks (pigeonhole),
-- so they are found by an equality join on blocks and then checked bit by bit.
hashed_images AS (
    SELECT
        image_id,
        phash,
        min(image_id) OVER (PARTITION BY phash) AS first_of_hash
    FROM run_images
    WHERE phash IS NOT NULL
),
distinct_hashes AS (
    SELECT DISTINCT phash, first_of_hash FROM hashed_images
),
hash_blocks AS (
    SELECT
        b AS block,
        (b * 64) // (getvariable('phash_distance') + 1) AS first_bit,
        ((b + 1) * 64) // (getvariable('phash_distance') + 1) - first_bit AS bits
    FROM range(getvariable('phash_distance') + 1) AS blocks(b)
    WHERE getvariable('phash_distance') > 0
),
blocked_hashes AS (
    SELECT
        distinct_hashes.phash,
        distinct_hashes.first_of_hash,
        hash_blocks.block,
        (distinct_hashes.phash >> hash_blocks.first_bit) & ((1::UBIGINT << hash_blocks.bits) - 1) AS block_value
    FROM distinct_hashes CROSS JOIN hash_blocks
),
-- hashes with a near hash (not identical) whose first image comes earlier
shadowed_hashes AS (
    SELECT DISTINCT later.phash
    FROM blocked_hashes AS later
    JOIN blocked_hashes AS earlier
      ON earlier.block = later.block
     AND earlier.block_value = later.block_value
     AND earlier.first_of_hash < later.first_of_hash
    WHERE bit_count(xor(earlier.phash, later.phash)) <= getvariable('phash_distance')
),
near_duplicates AS (
    SELECT image_id, 'near_duplicate' AS reason
    FROM hashed_images
    WHERE image_id > first_of_hash
       OR phash IN (SELECT phash FROM shadowed_hashes)
),
reasons AS (
    SELECT * FROM rated_earlier
    UNION ALL SELECT * FROM labelled
    UNION ALL SELECT * FROM in_test_set
    UNION ALL SELECT * FROM near_duplicates
)
SELECT reasons.image_id, reasons.reason
FROM reasons SEMI JOIN run_images USING (image_id);
