"""Any model version's prediction map of any image, the way scoring made it.

A model is a config entry at its current version, or a version from the models table
(fine-tuned weights). Commands name one as NAME (the config's version), NAME@VERSION (a
prefix is enough), NAME@STRATEGY (the newest version fine-tuned on that strategy's S:
target@mad, target@entropy) or NAME@STRATEGY:R (that strategy's version of round R). Maps come from the map store that `madmine score` fills, else from a
maps folder, else from the network run
with the scoring stages' own decode and preprocessing (resize to input_size, mean/std,
channels_last, bf16 as configured), and are then cached for the next command.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from madmine import tables
from madmine.config import Config, ModelSpec
from madmine.errors import EvaluationError
from madmine.images import ImageError
from madmine.models.registry import maps_folder, model_version
from madmine.models.resolve import resolve
from madmine.steps.reads import models_table
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.decode import decode_batch, pixels_column
from madmine.steps.score.map_store import MapStore, StoredMap
from madmine.steps.score.predict import Scorer
from madmine.steps.score.runs import run_records
from madmine.steps.score.shards import shards_of
from madmine.untrusted import Limits
from madmine.workspace import Workspace


@dataclass(frozen=True)
class ModelRef:
    """One model version: what Table 1 calls a row."""

    name: str
    version: str
    role: str
    spec: ModelSpec | None  # None: only cached maps can be read
    origin: str  # 'config' or 'models table'
    round: int | None = None
    created_at: str = ""
    current: bool = False  # the version the config names today
    selection: str | None = None  # the strategy whose S it was fine-tuned on (None: not fine-tuned here)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def trained_on(self) -> str:
        """In the paper's names: S(0) for a model as configured, S(0) + S(1) + ... + S(R+1) for round R's version."""
        if self.origin != "models table":
            return "S(0)" if self.role == "target" else "its own training set"
        from madmine.names import trained_on

        return trained_on(self.round, self.selection)

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.version


def _table_spec(config: Config, row: dict) -> ModelSpec | None:
    """A fine-tuned version runs as its config entry with the saved weights."""
    try:
        base = config.model(row["model"])
    except Exception:
        base = config.target if row.get("role", "target") == "target" else None
    weights = row.get("weights_uri") or row.get("checkpoint_uri")
    if base is None or not base.is_network or not weights:
        return None
    return dataclasses.replace(base, weights=weights, version=row["model_version"])


def model_refs(config: Config, ws: Workspace) -> list[ModelRef]:
    """Every target version of the models table (oldest first), then the config's models at
    their current versions; a version listed twice counts once."""
    config = resolve(config)
    refs: dict[tuple[str, str], ModelRef] = {}
    for row in models_table(ws):
        ref = ModelRef(
            name=row["model"],
            version=row["model_version"],
            role=row.get("role") or "target",
            spec=_table_spec(config, row),
            origin="models table",
            round=None if row.get("round") is None else int(row["round"]),
            created_at=str(row.get("created_at") or ""),
            selection=row.get("selection") or tables.MAD,
        )
        refs.setdefault(ref.key, ref)
    for spec in config.models:
        key = (spec.name, model_version(spec, config.storage_options, config.classes))
        known = refs.get(key)
        refs[key] = (
            dataclasses.replace(known, spec=spec, current=True)
            if known
            else ModelRef(spec.name, key[1], spec.role, spec, "config", current=True)
        )
    targets = [r for r in refs.values() if r.role == "target"]
    return targets + [r for r in refs.values() if r.role != "target"]


def _strategy_ref(refs: list[ModelRef], name: str, strategy: str, round_: str) -> ModelRef:
    """NAME@STRATEGY[:R]: the newest version of the strategy's chain (of round R when given)."""
    chain = [r for r in refs if r.name == name and r.origin == "models table" and r.selection == strategy]
    if round_:
        if not round_.isdigit():
            raise EvaluationError(f"{name}@{strategy}:{round_}: the round after ':' must be a number")
        chain = [r for r in chain if r.round == int(round_)]
    if not chain:
        where = f" of round {round_}" if round_ else ""
        raise EvaluationError(
            f"no version of {name!r} was fine-tuned on the S of {strategy}{where}: run "
            f"`madmine finetune --round R --selection {strategy}` (after `rate select --strategy {strategy}` and labelling)"
        )
    return max(chain, key=lambda r: (r.round if r.round is not None else -1, r.created_at))


def find_ref(refs: list[ModelRef], text: str) -> ModelRef:
    """'name' (the config's current version), 'name@version' (any version), 'name@strategy' (the
    newest version fine-tuned on that strategy's S) or 'name@strategy:R' (its version of round R)."""
    name, _, version = text.partition("@")
    strategy, _, round_ = version.partition(":")
    if strategy in tables.STRATEGIES:
        return _strategy_ref(refs, name, strategy, round_)
    matches = [r for r in refs if r.name == name and (not version or r.version == version)]
    if version and not matches:
        matches = [r for r in refs if r.name == name and r.version.startswith(version)]
    if not version:
        matches = [r for r in matches if r.current] or matches[-1:]
    if len(matches) != 1:
        known = ", ".join(r.label for r in refs)
        what = "matches several versions" if matches else "is not a known model"
        raise EvaluationError(
            f"{text!r} {what}; name a model as NAME, NAME@VERSION or NAME@STRATEGY ({', '.join(tables.STRATEGIES)}), "
            f"one of: {known}"
        )
    return matches[0]


class ModelMaps:
    """Maps of one model version: the map store, a maps folder or the network, in that order.

    The store holds a version's maps in the packs of the runs that scored it (one per shard)
    and, for images no run scored (T(0), other versions on a test set), in one pack per set of
    images that this class computed, named after the set.
    """

    def __init__(self, config: Config, ws: Workspace, ref: ModelRef):
        self.config, self.ws, self.ref = resolve(config), ws, ref
        self.store = MapStore(ws)
        self._scorer = None
        self._folder = None

    def _run_shards(self) -> list[int]:
        """Shard sizes of the runs that scored this version (their packs hold its maps)."""
        sizes = []
        for run in run_records(self.ws):
            if any(m.get("name") == self.ref.name and m.get("version") == self.ref.version for m in run.get("models", [])):
                sizes.append(int(run.get("shard_size") or 1024))
        return sorted(set(sizes))

    def _stored(self, ids: list[str], pack: str) -> dict[str, np.ndarray]:
        name, version = self.ref.name, self.ref.version
        found = {i: m.map for i, m in self.store.get_many(name, version, {i: pack for i in ids}).items()}
        for shard_size in self._run_shards():
            rest = [i for i in ids if i not in found]
            if not rest:
                break
            where = shards_of(self.ws, rest, shard_size)
            found.update({i: m.map for i, m in self.store.get_many(name, version, where).items()})
        rest = [i for i in ids if i not in found]
        if rest:  # maps stored under another set of images
            found.update({i: m.map for i, m in self.store.find(name, version, rest).items()})
        return found

    def maps(self, items: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """{image_id: map} for (image_id, uri) pairs; EvaluationError names what is missing."""
        ids = [image_id for image_id, _ in items]
        pack = "set-" + hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()[:16]
        out = self._stored(ids, pack)
        missing = [(image_id, uri) for image_id, uri in items if image_id not in out]
        if not missing:
            return out
        spec = self.ref.spec
        if spec is None:
            raise EvaluationError(
                f"model {self.ref.label}: no stored map for {len(missing)} image(s) (e.g. {missing[0][0]}) and no "
                "weights to run it; run `madmine score` with this version, or record its weights in the models table"
            )
        if not spec.is_network:
            out.update(self._from_folder(spec, missing))
        else:
            out.update(self._from_network(spec, missing, pack))
        return out

    def _from_folder(self, spec: ModelSpec, items: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        if self._folder is None:
            scoring = self.config.scoring
            self._folder = maps_folder(spec, self.config.classes, self.config.storage_options,
                                       max_bytes=scoring.max_bytes, timeout_s=scoring.decode_timeout_s,
                                       max_pixels=scoring.max_pixels)
        out = {}
        for image_id, uri in items:
            try:
                out[image_id] = self._folder.load(uri)
            except ImageError as exc:
                raise EvaluationError(f"model {self.ref.label}: {exc}") from exc
        return out

    def _from_network(self, spec: ModelSpec, items: list[tuple[str, str]], pack: str) -> dict[str, np.ndarray]:
        if self._scorer is None:
            ctx = ScoreContext(
                run_id="evaluate",
                classes=self.config.classes,
                models=(spec,),
                versions={spec.name: self.ref.version},
                workspace_uri=self.config.workspace_uri,
                storage_options=dict(self.config.storage_options),
                scoring=self.config.scoring,
            )
            self._scorer = Scorer(ctx)
        out, computed = {}, {}
        step = max(1, self.config.scoring.batch_size)
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            batch = decode_batch(
                {
                    "image_id": np.array([i for i, _ in chunk], dtype=object),
                    "uri": np.array([u for _, u in chunk], dtype=object),
                    "shard": np.array(["evaluate"] * len(chunk), dtype=object),
                },
                sizes=(spec.input_size,),
                storage_options=self.config.storage_options,
                limits=Limits.of(self.config.scoring),
                threads=self.config.scoring.decode_threads,
            )
            bad = [(str(i), str(e), str(d)) for i, e, d in zip(batch["image_id"], batch["error"], batch["detail"]) if e]
            if bad:
                raise EvaluationError(f"image {bad[0][0]} cannot be decoded: {bad[0][1]} ({bad[0][2]})")
            label_maps, entropy, msp = self._scorer.forward(spec, batch[pixels_column(spec.input_size)])
            label_maps = label_maps.cpu().numpy()
            for k, (image_id, _) in enumerate(chunk):
                out[image_id] = label_maps[k]
                computed[image_id] = StoredMap(label_maps[k], float(entropy[k]), float(msp[k]))
        if self.config.scoring.cache_maps and computed:
            self.store.add(self.ref.name, self.ref.version, pack, computed)
        return out
