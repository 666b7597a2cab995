"""Arrow schemas of the workspace tables (ARCHITECTURE §3: the column names are a contract)."""

import pyarrow as pa

MANIFEST = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("phash", pa.uint64()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

PREDICTIONS = pa.schema(
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
)

PAIRS = pa.schema(
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
)

ERRORS = pa.schema(
    [
        ("run_id", pa.string()),
        ("uri", pa.string()),
        ("image_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
        ("detail", pa.string()),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
