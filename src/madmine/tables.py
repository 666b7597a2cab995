"""The table catalog: every workspace table's name, where its files live, its schema, and
which command writes it (docs/architecture.md, "Tables": the column names are a contract).

No table path is built anywhere else: code asks a `Table` for `path(ws, ...)`, `files(ws)`
or `read(ws)`. sql/views.sql spells the same layout for the duckdb CLI; a test keeps the two
in step.

Layout under the workspace root (tables; other areas are listed in docs/architecture.md):

    tables/manifest/<part>.parquet              one part per ingest (immutable)
    tables/<run table>/<run_id>/<shard>.parquet predictions, pairs, errors: visible once the
                                                shard's marker runs/<run_id>/shards/<shard>.json exists
    tables/<table>/<key>.parquet                every other table, one file per round, part or name

Every file is written whole or not at all (Workspace.put_bytes).
"""

from __future__ import annotations

import posixpath
import re
import string
from dataclasses import dataclass

import pyarrow as pa

from madmine.completion import shard_markers
from madmine.workspace import Workspace

_UTC = pa.timestamp("us", tz="UTC")
MAD = "mad"  # the paper's strategy: maximum discrepancy
# how a round's images are chosen: MAD, the paper's baselines, and two that learn from earlier rounds' ratings
STRATEGIES = (MAD, "entropy", "msp", "random", "learned", "hybrid")
SORTED_BY = b"madmine.sorted_by"  # file metadata of a manifest part whose rows are in image_id order


@dataclass(frozen=True)
class Table:
    """One table: `pattern` is its file path under the workspace, with {keys} per file."""

    name: str
    pattern: str
    schema: pa.Schema | None
    written_by: str
    run_table: bool = False  # files of scoring runs count only once their shard is committed

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.pattern) if f)

    def _render(self, values: dict[str, str]) -> str:
        """The pattern with `values` ('*' for any)."""
        return self.pattern.format(**values)

    @property
    def folder(self) -> str:
        return posixpath.join("tables", self.name)

    def path(self, ws: Workspace, **keys) -> str:
        """The path of one file of the table (every key of the pattern given)."""
        keys = {k: v for k, v in keys.items() if v is not None}
        missing = set(self.keys) - set(keys)
        if missing:
            raise TypeError(f"table {self.name}: path needs {sorted(missing)}")
        return ws.path(self._render({k: str(keys[k]) for k in self.keys}))

    def glob(self, ws: Workspace, **keys) -> str:
        """A glob over the table's files; keys not given match anything. With no key, every
        Parquet file of the table's folder counts (parts written by hand or by other tools too)."""
        if not keys:
            return ws.path(self.folder, "*", "*.parquet") if self.run_table else ws.path(self.folder, "*.parquet")
        return ws.path(self._render({k: str(keys[k]) if keys.get(k) is not None else "*" for k in self.keys}))

    def keys_of(self, path: str) -> dict[str, str] | None:
        """The keys of a file path of this table ({'round': '3', ...}); None when the file does not
        follow the pattern."""
        regex = re.escape(self.pattern)
        for key in self.keys:
            regex = regex.replace(re.escape("{" + key + "}"), f"(?P<{key}>[^/]+?)", 1)
        match = re.search("(?:^|/)" + regex + "$", path)
        return match.groupdict() if match else None

    def _matches(self, path: str, keys: dict) -> bool:
        found = self.keys_of(path)
        return found is not None and all(found.get(k) == str(v) for k, v in keys.items() if v is not None)

    def rounds(self, ws: Workspace, **keys) -> list[int]:
        """The rounds that have a file of this table (tables keyed by round), ascending."""
        found = set()
        for path in self.files(ws, **keys):
            value = (self.keys_of(path) or {}).get("round", "")
            if value.isdigit():
                found.add(int(value))
        return sorted(found)

    def files(self, ws: Workspace, *, committed_only: bool = True, **keys) -> list[str]:
        """The table's Parquet files, sorted; for run tables only those of committed shards."""
        paths = ws.glob(self.glob(ws, **keys))
        if keys:  # a glob of one key's value also matches longer values (round-3* holds round-30)
            paths = [p for p in paths if self._matches(p, keys)]
        if not self.run_table or not committed_only:
            return paths
        committed: dict[str, set[str]] = {}
        out = []
        for path in paths:
            file_keys = self.keys_of(path) or {"run_id": "", "shard": ""}
            run_id = file_keys["run_id"]
            if run_id.startswith("ingest"):  # ingest errors are written whole, without shards
                out.append(path)
                continue
            if run_id not in committed:
                committed[run_id] = set(shard_markers(ws, run_id).done())
            if file_keys["shard"] in committed[run_id]:
                out.append(path)
        return out

    def exists(self, ws: Workspace, **keys) -> bool:
        return bool(self.files(ws, **keys))

    def read(self, ws: Workspace, **keys) -> pa.Table | None:
        """Every (committed) file of the table concatenated; None when there is none."""
        return ws.read_parquet(self.files(ws, **keys))

    def read_file(self, ws: Workspace, **keys) -> pa.Table:
        """One file of the table (every key given)."""
        return ws.read_parquet([self.path(ws, **keys)])

    def write(self, ws: Workspace, table: pa.Table, *, metadata: dict | None = None, row_group_size: int | None = None,
              **keys) -> str:
        """Write one file of the table atomically, in the table's schema (plus file `metadata`); returns its path.
        Columns of the schema that `table` lacks are written as nulls."""
        if self.schema is not None:
            for name in self.schema.names:
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows, self.schema.field(name).type))
            table = table.select(self.schema.names).cast(self.schema)
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        path = self.path(ws, **keys)
        ws.write_parquet(path, table, row_group_size=row_group_size)
        return path

    def from_rows(self, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


MANIFEST = Table(
    "manifest",
    "tables/manifest/{part}.parquet",
    pa.schema(
        [
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("bytes", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("phash", pa.uint64()),
            ("ingested_at", _UTC),
        ]
    ),
    "madmine ingest SOURCE...",
)

PREDICTIONS = Table(
    "predictions",
    "tables/predictions/{run_id}/{shard}.parquet",
    pa.schema(
        [
            ("run_id", pa.string()),
            ("image_id", pa.string()),
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("role", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("class_pixels", pa.list_(pa.int64())),
            ("mean_entropy", pa.float64()),
            ("mean_msp", pa.float64()),
        ]
    ),
    "madmine score",
    run_table=True,
)

PAIRS = Table(
    "pairs",
    "tables/pairs/{run_id}/{shard}.parquet",
    pa.schema(
        [
            ("run_id", pa.string()),
            ("image_id", pa.string()),
            ("target_version", pa.string()),
            ("competitor", pa.string()),
            ("competitor_version", pa.string()),
            ("intersection", pa.list_(pa.int64())),
            ("union", pa.list_(pa.int64())),
            ("d", pa.float64()),
        ]
    ),
    "madmine score",
    run_table=True,
)

ERRORS = Table(
    "errors",
    "tables/errors/{run_id}/{shard}.parquet",
    pa.schema(
        [
            ("run_id", pa.string()),
            ("uri", pa.string()),
            ("image_id", pa.string()),
            ("stage", pa.string()),
            ("error", pa.string()),
            ("detail", pa.string()),
        ]
    ),
    "madmine ingest / madmine score",
    run_table=True,
)

BOUNDS = Table(
    "bounds",
    "tables/bounds/bounds.parquet",
    pa.schema(
        [
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            ("p", pa.float64()),
            ("q", pa.float64()),
            ("n_images", pa.int64()),
            ("p_quantile", pa.float64()),
            ("q_quantile", pa.float64()),
            ("labels_uri", pa.string()),
        ]
    ),
    "madmine bounds LABELS_DIR",
)

CANDIDATES = Table(
    "candidates",
    "tables/candidates/round-{round}-{strategy}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("competitor", pa.string()),
            ("direction", pa.string()),
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            ("class_fraction", pa.float64()),
            ("d", pa.float64()),
            ("rank", pa.int32()),
            ("strategy", pa.string()),
            ("run_id", pa.string()),
            ("score", pa.float64()),
            ("shard", pa.string()),  # the scoring shard, where the map store keeps the image's maps
        ]
    ),
    "madmine select --round R",
)

RATINGS = Table(
    "ratings",
    "tables/ratings/round-{round}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("image_id", pa.string()),
            ("rater", pa.string()),
            ("score", pa.int8()),
            ("created_at", _UTC),
        ]
    ),
    "madmine rate serve (the weak-labelling app)",
)

SELECTED = Table(
    "selected",
    "tables/selected/round-{round}-{strategy}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("mos", pa.float64()),
            ("n_ratings", pa.int32()),
            ("rank", pa.int32()),
            ("strategy", pa.string()),
        ]
    ),
    "madmine rate select [--strategy NAME]",
)

LABELS = Table(
    "labels",
    "tables/labels/{part}.parquet",
    pa.schema(
        [
            ("image_id", pa.string()),
            ("mask_uri", pa.string()),
            ("source", pa.string()),
            ("round", pa.int32()),
            ("created_at", _UTC),
        ]
    ),
    "madmine annotate import",
)

TESTSETS = Table(
    "testsets",
    "tables/testsets/round-{round}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("position", pa.int32()),
            ("main_class", pa.int32()),
            ("class_name", pa.string()),
            ("mos", pa.float64()),
            ("n_ratings", pa.int32()),
            ("seed", pa.int64()),
            ("created_at", _UTC),
            ("testset", pa.string()),  # the paper's name: round R's set is T(R+1)
        ]
    ),
    "madmine testset (or the round's testset step)",
)

MODELS = Table(
    "models",
    "tables/models/{model}-round-{round}-{selection}.parquet",
    pa.schema(
        [
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("role", pa.string()),
            ("arch", pa.string()),
            ("weights_uri", pa.string()),
            ("parent_version", pa.string()),
            ("created_at", _UTC),
            ("round", pa.int32()),
            ("metrics", pa.string()),
            ("checkpoint_uri", pa.string()),
            ("val_miou", pa.float64()),
            ("lr", pa.float64()),
            ("factory", pa.string()),
            ("selection", pa.string()),  # the strategy whose S it was trained on
        ]
    ),
    "madmine finetune [--selection NAME]",
)

FINETUNE_CURVES = Table(
    "finetune_curves",
    "tables/finetune_curves/round-{round}-{selection}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("trial", pa.string()),
            ("lr", pa.float64()),
            ("epoch", pa.int32()),
            ("train_loss", pa.float64()),
            ("val_miou", pa.float64()),
            ("resumed", pa.bool_()),
            ("seconds", pa.float64()),
            ("v_failures", pa.float64()),  # choose_by = "validation": failures on V, the held-out part of S
            ("v_image_miou", pa.float64()),
            ("s_failures", pa.float64()),  # failures on the S it trains on: does it fit S?
            ("s_image_miou", pa.float64()),
            ("step", pa.int64()),  # optimiser steps done
            ("kept", pa.bool_()),  # the epoch whose checkpoint the trial keeps
        ]
    ),
    "madmine finetune [--selection NAME]",
)

EVALUATION = Table(
    "evaluation",
    "tables/evaluation/evaluation.parquet",
    pa.schema(
        [
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("label", pa.string()),
            ("role", pa.string()),
            ("origin", pa.string()),
            ("model_round", pa.int32()),
            ("order", pa.int32()),
            ("testset_round", pa.int32()),
            ("testset", pa.string()),
            ("n_images", pa.int32()),
            ("n_labelled", pa.int32()),
            ("miou", pa.float64()),
            ("per_image_miou", pa.float64()),
            ("iou", pa.list_(pa.float64())),
            ("intersection", pa.list_(pa.int64())),
            ("union", pa.list_(pa.int64())),
            ("error", pa.string()),
            ("evaluated_at", _UTC),
            ("testset_index", pa.int32()),  # the paper's i of T(i): 0 held-out, R + 1 for round R's set
            ("selection", pa.string()),  # the strategy whose S the version was trained on (null: not fine-tuned)
            ("trained_on", pa.string()),  # e.g. "S(0) + S(1) + S(2) (mad)"
            ("paper_pair", pa.bool_()),  # the paper's pairing: f(i) on T(i+1), the version that selected M(i)
        ]
    ),
    "madmine evaluate",
)

EVALUATION_IMAGES = Table(
    "evaluation_images",
    "tables/evaluation_images/evaluation.parquet",
    pa.schema(
        [
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("label", pa.string()),
            ("testset_round", pa.int32()),
            ("position", pa.int32()),
            ("image_id", pa.string()),
            ("intersection", pa.list_(pa.int64())),
            ("union", pa.list_(pa.int64())),
            ("image_miou", pa.float64()),
        ]
    ),
    "madmine evaluate",
)

SELECTION_QUALITY = Table(
    "selection_quality",
    "tables/selection_quality/selection_quality.parquet",
    pa.schema(
        [
            ("run_id", pa.string()),
            ("strategy", pa.string()),
            ("pool", pa.int32()),
            ("failures", pa.int32()),
            ("tau", pa.float64()),
            ("n", pa.int32()),
            ("precision_at_n", pa.float64()),
            ("auroc", pa.float64()),
            ("aupr", pa.float64()),
            ("base_rate", pa.float64()),
        ]
    ),
    "madmine evaluate",
)

COMPETITIONS = Table(
    "competitions",
    "tables/competitions/{competition}.parquet",
    pa.schema(
        [
            ("competition", pa.string()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("d", pa.float64()),
            ("rank", pa.int32()),
            ("model_a", pa.string()),
            ("version_a", pa.string()),
            ("model_b", pa.string()),
            ("version_b", pa.string()),
            ("pool", pa.int64()),
            ("created_at", _UTC),
            ("protocol", pa.string()),  # 'mad' (per class, size filter, veto) or 'd-ranking'; null: d-ranking
            ("direction", pa.string()),  # mad: partitioned by A's map ('a') or B's ('b')
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            ("class_fraction", pa.float64()),
            ("group_rank", pa.int32()),  # rank within its (direction, class) group
        ]
    ),
    "madmine compete A B",
)

COMPETITION_RESULTS = Table(
    "competition_results",
    "tables/competition_results/{competition}.parquet",
    pa.schema(
        [
            ("competition", pa.string()),
            ("model_a", pa.string()),
            ("model_b", pa.string()),
            ("selected", pa.int32()),
            ("labelled", pa.int32()),
            ("miou_a", pa.float64()),
            ("miou_b", pa.float64()),
            ("per_image_miou_a", pa.float64()),
            ("per_image_miou_b", pa.float64()),
            ("wins_a", pa.int32()),
            ("wins_b", pa.int32()),
            ("winner", pa.string()),
            ("evaluated_at", _UTC),
            ("protocol", pa.string()),
            ("vetoed", pa.int32()),  # images a rater marked out of domain (never labelled or scored)
            ("waiting_raters", pa.int32()),  # images short of [rating] min_raters votes
            ("diff_low", pa.float64()),  # 95% paired-bootstrap interval of miou_a - miou_b (the winner: 0 outside it)
            ("diff_high", pa.float64()),
            ("sign_p", pa.float64()),  # sign test of the per-image wins, two-sided
        ]
    ),
    "madmine compete A B",
)

SAMPLE = Table(
    "sample",
    "tables/sample/sample.parquet",
    pa.schema(
        [
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("position", pa.int32()),
            ("seed", pa.int64()),
            ("created_at", _UTC),
        ]
    ),
    "madmine sample --size N",
)

SELECTORS = Table(
    "selectors",
    "tables/selectors/round-{round}.parquet",
    pa.schema(
        [
            ("round", pa.int32()),
            ("run_id", pa.string()),
            ("selector", pa.string()),
            ("pool", pa.int32()),  # images judged: labelled (or, in the demo, known) images of the round's run
            ("in_domain", pa.int32()),
            ("failures", pa.int32()),  # in domain, per-image mIoU below tau
            ("tau", pa.float64()),
            ("auroc", pa.float64()),
            ("auroc_low", pa.float64()),
            ("auroc_high", pa.float64()),
            ("aupr_error", pa.float64()),  # average precision, failures positive
            ("aupr_error_low", pa.float64()),
            ("aupr_error_high", pa.float64()),
            ("fpr95", pa.float64()),  # non-failures flagged at the threshold that catches 95% of the failures
            ("fpr95_low", pa.float64()),
            ("fpr95_high", pa.float64()),
            ("spearman", pa.float64()),  # of the score with the per-image mIoU (a good selector: negative)
            ("spearman_low", pa.float64()),
            ("spearman_high", pa.float64()),
            ("pearson", pa.float64()),
            ("pearson_low", pa.float64()),
            ("pearson_high", pa.float64()),
            ("k_m", pa.int32()),  # |M| of MAD scaled to the pool
            ("precision_at_m", pa.float64()),  # failures among the selector's top k_m of the pool
            ("precision_at_m_low", pa.float64()),
            ("precision_at_m_high", pa.float64()),
            ("ood_at_m", pa.float64()),  # out-of-domain images among them
            ("k_n4", pa.int32()),
            ("precision_at_n4", pa.float64()),
            ("precision_at_n4_low", pa.float64()),
            ("precision_at_n4_high", pa.float64()),
            ("ood_at_n4", pa.float64()),
            ("note", pa.string()),
        ]
    ),
    "madmine evaluate --selectors",
)

REPAIR = Table(
    "repair",
    "tables/repair/{part}.parquet",
    pa.schema(
        [
            ("model", pa.string()),
            ("model_version", pa.string()),  # the new version
            ("parent_version", pa.string()),  # what it was fine-tuned from
            ("selection", pa.string()),  # the strategy whose S it learned from
            ("model_round", pa.int32()),
            ("set", pa.string()),  # "T(0)", "T(i)", "V" (held out of S) or "S" (the S it trained on)
            ("testset_round", pa.int32()),  # T(i)'s round (-1: T(0)); null for V and S
            ("images", pa.int32()),  # images with a labelled pixel, both models measured
            ("failures", pa.int32()),  # the parent's failures (per-image mIoU < tau)
            ("fixed", pa.int32()),  # ... that the new version passes
            ("fixed_low", pa.float64()),  # 95% Wilson interval of fixed / failures
            ("fixed_high", pa.float64()),
            ("passing", pa.int32()),  # the parent's passing images
            ("broke", pa.int32()),  # ... that the new version fails
            ("broke_low", pa.float64()),  # 95% Wilson interval of broke / passing
            ("broke_high", pa.float64()),
            ("parent_image_miou", pa.float64()),  # mean per-image mIoU of the parent over the counted images
            ("image_miou", pa.float64()),  # ... and of the new version
            ("tau", pa.float64()),
            ("source", pa.string()),  # "finetune" (V, S, T(0) when it was made) or "evaluate"
            ("created_at", _UTC),
        ]
    ),
    "madmine finetune (finetune-<model>-round-<R>-<strategy>) and madmine evaluate (evaluation)",
)

CATALOG: dict[str, Table] = {
    t.name: t
    for t in (
        MANIFEST, PREDICTIONS, PAIRS, ERRORS, BOUNDS, CANDIDATES, RATINGS, SELECTED, LABELS, TESTSETS, MODELS,
        FINETUNE_CURVES, EVALUATION, EVALUATION_IMAGES, SELECTION_QUALITY, COMPETITIONS, COMPETITION_RESULTS,
        SAMPLE, SELECTORS, REPAIR,
    )
}


def table(name: str) -> Table:
    return CATALOG[name]
