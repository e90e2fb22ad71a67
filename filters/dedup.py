"""Prompt deduplication: exact (normalised hash) and near-duplicate (MinHash + LSH), keeping the best
samples of each cluster. Linear in the number of rows: no pairwise comparison anywhere.

How it works
- A prompt is normalised (NFKC, lower case, whitespace collapsed) and hashed: equal hashes are one
  *node*. Distinct prompts get a MinHash signature of their word 3-gram shingles (`num_perm` hashes of
  the multiply-shift family, computed with numpy over a whole batch at once).
- LSH: the signature is cut into `bands`; prompts whose band values agree in some band are candidates.
  Sorting each band's keys puts candidates next to each other; each adjacent pair is verified (the
  share of equal signature values estimates Jaccard similarity; it must reach `threshold`, and, with
  `same_numbers`, the prompts must hold the same numbers: "What is 12 + 7?" and "What is 13 + 7?" are
  different problems). Verified pairs join nodes into clusters (vectorised union-find).
- Selection: in each cluster, rows are ranked: identical completions of one prompt after their first
  copy, then rows already rejected for another reason, then by verdict (correct, unverified,
  incorrect), then shortest completion, then input order. The cluster keeps as many rows as its
  largest prompt group has (the samples of one prompt: rows sharing a `prompt_id`, or an identical
  prompt when there is no `prompt_id` column), or `samples_per_prompt` when set. Dropped rows get
  `duplicate` when their prompt text survives in a kept row (or their completion is a copy), else
  `near_duplicate`; `duplicate_of` names the cluster's best row.

Global state is small: per row a few integers; per distinct prompt its band keys and signature, which
`DedupIndex` can spill to a directory (streaming curation does), so memory stays flat with scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from filters.correctness import as_bool
from filters.measure import Measure, prompt_series
from filters.minhash import MinHasher, normalize_expr, numbers_expr

VERIFY_CHUNK = 1 << 18  # candidate pairs verified at once

# Codes in `DedupResult.reason`.
KEEP, DUPLICATE, NEAR_DUPLICATE = 0, 1, 2
REASON_NAMES = {DUPLICATE: "duplicate", NEAR_DUPLICATE: "near_duplicate"}
# Added to a judged frame with the decisions.
DEDUP_COLUMNS: tuple[str, ...] = ("dup_cluster", "dup_cluster_prompts", "duplicate_of")


@dataclass
class DedupResult:
    reason: np.ndarray  # int8 per row: KEEP, DUPLICATE, NEAR_DUPLICATE
    duplicate_of: np.ndarray  # int64 per row: index of the cluster's best row where dropped, else -1
    cluster: np.ndarray  # int64 per row: cluster id (smallest node index in it)
    cluster_prompts: np.ndarray  # int64 per row: distinct prompts in the row's cluster
    stats: dict[str, Any] = field(default_factory=dict)


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected-component labels (the smallest node of each component) by vectorised union-find."""
    labels = np.arange(n, dtype=np.int64)
    if len(u) == 0:
        return labels
    while True:
        lu, lv = labels[u], labels[v]
        if np.array_equal(lu, lv):
            return labels
        m = np.minimum(lu, lv)
        np.minimum.at(labels, lu, m)
        np.minimum.at(labels, lv, m)
        while True:  # pointer jumping until every node points at its root
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt


def _load(part: np.ndarray | Path, mmap: bool = True) -> np.ndarray:
    return np.load(part, mmap_mode="r" if mmap else None) if isinstance(part, Path) else part


class DedupIndex:
    """Collects what dedup needs, batch by batch, then decides for every row at once.

    `add_prompts` takes a batch's distinct prompts (with signatures from `MinHasher`, computed where
    the batch is scored); `add_rows` the batch's rows. With `spill_dir`, signatures and band keys go
    to .npy files there instead of memory.
    """

    def __init__(self, cfg, spill_dir: str | Path | None = None):
        self.cfg = cfg
        self.bands, self.num_perm = cfg.bands, cfg.num_perm
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self._entry_hash: list[np.ndarray] = []
        self._entry_numbers: list[np.ndarray] = []
        self._sigs: list[np.ndarray | Path] = []
        self._bands: list[np.ndarray | Path] = []
        self._rows: dict[str, list[np.ndarray]] = {k: [] for k in ("prompt", "group", "completion", "verdict", "length", "rejected")}

    def _keep(self, arr: np.ndarray, kind: str) -> np.ndarray | Path:
        if self.spill_dir is None:
            return arr
        path = self.spill_dir / f"{kind}-{len(self._sigs):06d}.npy"
        np.save(path, arr)
        return path

    def add_prompts(self, prompt_hash: np.ndarray, numbers_hash: np.ndarray, sig: np.ndarray, bands: np.ndarray) -> None:
        """Distinct prompts of one batch: hashes, MinHash signatures and band keys (`MinHasher`)."""
        if not self.cfg.near_duplicates or len(prompt_hash) == 0:
            return
        self._entry_hash.append(np.asarray(prompt_hash, dtype=np.uint64))
        self._entry_numbers.append(np.asarray(numbers_hash, dtype=np.uint64))
        self._bands.append(self._keep(bands, "bands"))
        self._sigs.append(self._keep(sig, "sig"))

    def add_rows(self, prompt_hash, group_hash, completion_hash, verdict, length, rejected) -> None:
        """One batch of rows: prompt hash, prompt group (prompt_id) hash, completion hash, verdict rank
        (0 correct, 1 unverified, 2 incorrect), completion length, already rejected for another reason."""
        for key, arr, dtype in (
            ("prompt", prompt_hash, np.uint64), ("group", group_hash, np.uint64),
            ("completion", completion_hash, np.uint64), ("verdict", verdict, np.int8),
            ("length", length, np.int64), ("rejected", rejected, bool),
        ):  # fmt: skip
            self._rows[key].append(np.asarray(arr, dtype=dtype))

    # --- deciding ------------------------------------------------------------------------------

    def _near_edges(self, node_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Verified node pairs (u, v) from the LSH buckets."""
        empty = np.empty(0, dtype=np.int64)
        if not self._entry_hash:
            return empty, empty, {"candidate_pairs": 0, "similar_pairs": 0}
        entry_node = np.searchsorted(node_hash, np.concatenate(self._entry_hash))
        entry_numbers = np.concatenate(self._entry_numbers)
        offsets = np.cumsum([0] + [len(h) for h in self._entry_hash])
        pu, pv = [], []
        for j in range(self.bands):
            keys = np.concatenate([np.array(_load(p)[j]) for p in self._bands])
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            same = np.flatnonzero(sk[1:] == sk[:-1])
            a, b = order[same], order[same + 1]
            differ = entry_node[a] != entry_node[b]
            pu.append(a[differ])
            pv.append(b[differ])
            del keys, order, sk
        a, b = np.concatenate(pu), np.concatenate(pv)
        # one check per node pair
        nu, nv = entry_node[a], entry_node[b]
        lo, hi = np.minimum(nu, nv), np.maximum(nu, nv)
        _, first = np.unique(lo * np.int64(len(node_hash)) + hi, return_index=True)
        a, b = a[first], b[first]
        n_candidates = len(a)
        if self.cfg.same_numbers:
            ok = entry_numbers[a] == entry_numbers[b]
            a, b = a[ok], b[ok]
        sim = self._similarity(a, b, offsets)
        ok = sim >= self.cfg.threshold
        a, b = a[ok], b[ok]
        return entry_node[a], entry_node[b], {"candidate_pairs": int(n_candidates), "similar_pairs": int(len(a))}

    def _similarity(self, a: np.ndarray, b: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Share of equal signature values of entries a[i], b[i] (in chunks: bounded memory)."""
        out = np.empty(len(a))
        for s in range(0, len(a), VERIFY_CHUNK):
            sa, sb = a[s : s + VERIFY_CHUNK], b[s : s + VERIFY_CHUNK]
            out[s : s + VERIFY_CHUNK] = (self._gather(sa, offsets) == self._gather(sb, offsets)).mean(axis=1)
        return out

    def _gather(self, idx: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.num_perm), dtype=np.uint32)
        part = np.searchsorted(offsets, idx, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            out[sel] = np.asarray(_load(self._sigs[p])[idx[sel] - offsets[p]])
        return out

    def decide(self) -> DedupResult:
        rows = {}
        for k, parts in self._rows.items():
            rows[k] = np.concatenate(parts) if parts else np.empty(0)
            self._rows[k] = []  # the pieces are not needed twice
        n = len(rows["prompt"])
        if n == 0:
            z = np.empty(0, dtype=np.int64)
            return DedupResult(np.empty(0, dtype=np.int8), z, z, z, {"rows": 0})
        node_hash, node = np.unique(rows.pop("prompt"), return_inverse=True)
        n_nodes = len(node_hash)
        stats: dict[str, Any] = {"rows": n, "distinct_prompts": n_nodes}
        if self.cfg.near_duplicates:
            u, v, edge_stats = self._near_edges(node_hash)
            stats.update(edge_stats)
        else:
            u = v = np.empty(0, dtype=np.int64)
        del node_hash
        label = connected_components(n_nodes, u, v)
        cluster = label[node]
        nodes_per_cluster = np.bincount(label, minlength=n_nodes)
        stats["near_duplicate_clusters"] = int((nodes_per_cluster > 1).sum())
        del label, u, v

        completion = rows.pop("completion")
        copy = _copies(node, completion, rows) if self.cfg.completions else np.zeros(n, dtype=bool)
        del completion
        group = rows.pop("group")
        if self.cfg.samples_per_prompt is not None:
            slots = np.full(n_nodes, self.cfg.samples_per_prompt, dtype=np.int64)
        else:
            slots = _largest_group(cluster, group, n_nodes)
        del group
        dropped, best = _select(cluster, copy, rows, slots)

        node_kept = np.zeros(n_nodes, dtype=bool)
        node_kept[node[~dropped]] = True
        reason = np.full(n, KEEP, dtype=np.int8)
        reason[dropped] = np.where(copy[dropped] | node_kept[node[dropped]], DUPLICATE, NEAR_DUPLICATE)
        stats["duplicate"] = int((reason == DUPLICATE).sum())
        stats["near_duplicate"] = int((reason == NEAR_DUPLICATE).sum())
        return DedupResult(
            reason=reason,
            duplicate_of=np.where(dropped, best, -1),
            cluster=cluster,
            cluster_prompts=nodes_per_cluster[cluster],
            stats=stats,
        )


# The helpers below use stable sorts (np.lexsort), so ties keep input order.


def _copies(node: np.ndarray, completion: np.ndarray, rows: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose (prompt, completion) appeared before in rank order: every copy after the best one."""
    order = np.lexsort((rows["length"], rows["verdict"], rows["rejected"], completion, node))
    key_n, key_c = node[order], completion[order]
    repeat = np.zeros(len(node), dtype=bool)
    repeat[1:] = (key_n[1:] == key_n[:-1]) & (key_c[1:] == key_c[:-1])
    copy = np.zeros(len(node), dtype=bool)
    copy[order] = repeat
    return copy


def _largest_group(cluster: np.ndarray, group: np.ndarray, n_nodes: int) -> np.ndarray:
    """Per cluster id: the number of rows of its largest prompt group."""
    order = np.lexsort((group, cluster))
    gc, gg = cluster[order], group[order]
    del order
    start = np.ones(len(gc), dtype=bool)
    start[1:] = (gc[1:] != gc[:-1]) | (gg[1:] != gg[:-1])
    run_len = np.bincount(np.cumsum(start) - 1)
    slots = np.zeros(n_nodes, dtype=np.int64)
    np.maximum.at(slots, gc[start], run_len)
    return slots


def _select(cluster: np.ndarray, copy: np.ndarray, rows: dict[str, np.ndarray], slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropped, index of the cluster's best row) per row: rows ranked within their cluster (copies,
    then rows rejected anyway, last; then correct before unverified before incorrect; then shortest),
    the first `slots[cluster]` kept."""
    n = len(cluster)
    order = np.lexsort((rows["length"], rows["verdict"], rows["rejected"], copy, cluster))
    oc = cluster[order]
    first = np.ones(n, dtype=bool)
    first[1:] = oc[1:] != oc[:-1]
    del oc
    first_pos = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    del first
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first_pos
    best = np.empty(n, dtype=np.int64)
    best[order] = order[first_pos]
    return copy | (rank >= slots[cluster]), best


class Dedup(Measure):
    """duplicate, near_duplicate: dropped from a prompt cluster (module doc). Unlike the other measures
    it decides over every row at once (`DedupIndex`), so it must be the last measure: `reject` gives
    nothing, `inputs` gives what the index needs from one batch, `apply` adds the decisions."""

    name = "dedup"
    reasons = tuple(REASON_NAMES.values())

    def __init__(self, cfg: CurateConfig, loaded: None = None) -> None:
        super().__init__(cfg)
        d = cfg.dedup
        self.hasher = MinHasher(d.num_perm, d.bands, d.shingle, d.seed)

    def inputs(self, judged: pl.DataFrame) -> dict[str, Any]:
        """Per-row keys and the batch's distinct prompts with their MinHash signatures, for DedupIndex.
        `judged` carries `reject_reasons` from the other measures (rows rejected anyway rank last)."""
        keys = pl.DataFrame({"norm": prompt_series(judged)}).with_columns(normalize_expr(pl.col("norm")).alias("norm"))
        keys = keys.with_columns(pl.col("norm").hash(seed=3).alias("prompt"))
        if "prompt_id" in judged.columns:
            pid = judged.get_column("prompt_id").cast(pl.Utf8)
            group = pl.Series(pid.hash(seed=5)).zip_with(pid.is_not_null(), keys.get_column("prompt"))
        else:
            group = keys.get_column("prompt")
        correct = judged.get_column("correct") if "correct" in judged.columns else pl.Series([None] * judged.height)
        verdict = [0 if v is True else 2 if v is False else 1 for v in map(as_bool, correct.to_list())]
        rows = {
            "prompt_hash": keys.get_column("prompt").to_numpy(),
            "group_hash": group.to_numpy(),
            "completion_hash": judged.get_column("completion").fill_null("").str.strip_chars().hash(seed=9).to_numpy(),
            "verdict": np.array(verdict, dtype=np.int8),
            "length": judged.get_column("completion_chars").to_numpy(),
            "rejected": (judged.get_column("reject_reasons").list.len() > 0).to_numpy(),
        }
        prompts: dict[str, Any] = {}
        if self.cfg.dedup.enabled and self.cfg.dedup.near_duplicates:
            distinct = keys.unique(subset="prompt", keep="first", maintain_order=True)
            distinct = distinct.with_columns(numbers_expr(pl.col("norm")).alias("numbers"))
            sig = self.hasher.signatures(distinct.get_column("norm"))
            prompts = {
                "prompt_hash": distinct.get_column("prompt").to_numpy(),
                "numbers_hash": distinct.get_column("numbers").to_numpy(),
                "sig": sig,
                "bands": self.hasher.band_keys(sig),
            }
        return {"rows": rows, "prompts": prompts}


def apply_dedup(
    df: pl.DataFrame, reason: np.ndarray, duplicate_of: pl.Series, cluster: np.ndarray, cluster_prompts: np.ndarray
) -> pl.DataFrame:
    """Append the dedup reason to `reject_reasons`, add DEDUP_COLUMNS and `reject_reason` (the first
    reason)."""
    names = pl.Series([REASON_NAMES.get(int(r)) for r in reason], dtype=pl.Utf8)
    extra = pl.when(names.is_not_null()).then(pl.concat_list(names)).otherwise(pl.lit([], dtype=pl.List(pl.Utf8)))
    return df.with_columns(
        pl.Series("dup_cluster", cluster, dtype=pl.Int64),
        pl.Series("dup_cluster_prompts", cluster_prompts, dtype=pl.Int64),
        duplicate_of.cast(pl.Utf8).alias("duplicate_of"),
        pl.concat_list(pl.col("reject_reasons"), extra).alias("reject_reasons"),
    ).with_columns(pl.col("reject_reasons").list.first().alias("reject_reason"))


def no_dedup(df: pl.DataFrame) -> pl.DataFrame:
    """`apply_dedup` with dedup off: nothing dropped, every row its own cluster (-1)."""
    n = df.height
    return apply_dedup(
        df, np.zeros(n, dtype=np.int8), pl.Series([None] * n, dtype=pl.Utf8), np.full(n, -1), np.zeros(n, dtype=np.int64)
    )


def duplicate_ids(ids: pl.Series, duplicate_of: np.ndarray) -> pl.Series:
    """The id of row `duplicate_of[i]`, null where it is -1."""
    ids = ids.cast(pl.Utf8)
    if not len(ids):
        return pl.Series([], dtype=pl.Utf8)
    picked = ids.gather(np.maximum(duplicate_of, 0))
    return picked.zip_with(pl.Series(duplicate_of >= 0), pl.Series([None] * len(ids), dtype=pl.Utf8))
