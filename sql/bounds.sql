-- Size bounds of each class (step 2 of the method, docs/paper.md): p_k and q_k are quantiles
-- (quantile_cont: linear interpolation; by default the first and third quartiles) of the
-- area fraction pixels_k / (h * w) over the labelled images that contain class k.
-- A class that no labelled image contains gets NULL bounds and n_images = 0: it forms no
-- group in selection.
-- Inputs: label_counts (image_id, height, width, class_pixels), registered by madmine.
-- Variables: p_quantile, q_quantile, class_names (index = class id), labels_uri.

WITH label_fractions AS (
    SELECT
        image_id,
        height::BIGINT * width AS area,
        unnest(class_pixels) AS pixels,
        unnest(range(len(class_pixels))) AS class_id
    FROM label_counts
),
class_quartiles AS (
    SELECT
        class_id,
        quantile_cont(pixels / area, getvariable('p_quantile')) AS p,
        quantile_cont(pixels / area, getvariable('q_quantile')) AS q,
        count(*) AS n_images
    FROM label_fractions
    WHERE pixels > 0
    GROUP BY class_id
),
class_list AS (
    SELECT
        unnest(getvariable('class_names')) AS class_name,
        unnest(range(len(getvariable('class_names')))) AS class_id
)
SELECT
    class_list.class_id::INTEGER AS class_id,
    class_list.class_name,
    class_quartiles.p,
    class_quartiles.q,
    coalesce(class_quartiles.n_images, 0)::BIGINT AS n_images,
    getvariable('p_quantile')::DOUBLE AS p_quantile,
    getvariable('q_quantile')::DOUBLE AS q_quantile,
    getvariable('labels_uri')::VARCHAR AS labels_uri
FROM class_list
LEFT JOIN class_quartiles USING (class_id)
ORDER BY class_list.class_id;
