-- The top n3 of each group over a run ranked a part at a time: `part_winners` holds every
-- part's top n3 of each group (the columns of `groups`), and the best n3 of those are the
-- best n3 of the whole run (ranking.sql's top_by_discrepancy, same order and tie-break).
-- Variables: n3.

CREATE OR REPLACE TEMP VIEW ranked AS
SELECT * FROM top_by_discrepancy('part_winners');
