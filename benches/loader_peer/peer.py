#!/usr/bin/env python3
"""Peer of `ecamp bench loader`: the official ECAMP CPU data pipeline, reproduced in Python.

It does the per-sample work of the official `ContextBertDataset.__getitem__` + `collate_fn`
(ToniChopp/ECAMP, `Pre-training/module/pretrain_datasets.py`; spec: shared/spec/ecamp-method.md
§2.2-§2.8) on an ecamp dataset, through a torch `DataLoader`, and prints one JSON line:

    {"samples": N, "seconds": S, "samples_per_s": R, "workers": W, "torch": "<version>"}

Everything else goes to stderr. The dataset is read fully into memory before timing starts
(the official code reads JPEG files from disk; in-memory bytes favour the peer).

Text work comes in two implementations with identical rules (select with --text-impl):
  official  the official code's data structures: (1, L) int64 tensors read and written element by
            element, an id->word dict and a 44-string entity *list* looked up per token, list
            membership for positions, a float tensor of weights updated element by element,
            truncation/padding re-enabled per sample. This is what the official pipeline costs.
  lists     the same steps over Python lists and sets, converted to tensors once at the end: a
            lean-Python reference showing how much of the official cost is tensor indexing.
Random draws come from Python's `random` as in the official code (PyTorch seeds it per worker).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import sys
import time
import urllib.parse
from copy import deepcopy
from pathlib import Path

# The official code never sets this; it only silences the fork warning of HF tokenizers and has
# no effect on single-string `encode`, the only call made per sample.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402

# §2.5: the official 44 entity strings, matched exactly against one token's vocab string. Kept as a
# *list* (linear `in`) like the official code; "aerate", "hyperinflate" and upper-case "COPD" can
# never match (§10.3).
ENTITIES = [
    "abnormality", "abscess", "aerate", "aorta", "atelectasis", "bronchiectasis", "calcification",
    "cardiomediastinal", "cardiomegaly", "catheter", "chf", "collapse", "congestion", "consolidation",
    "contour", "COPD", "deformity", "dilation", "distention", "edema", "effusion", "embolism",
    "emphysema", "engorgement", "fibrosis", "fracture", "granuloma", "hernia", "hilar", "hyperinflate",
    "hemidiaphragm", "infiltrate", "mass", "nodule", "obscure", "opacity", "perihilar", "pneumonia",
    "pneumothorax", "sarcoidosis", "silhouette", "thickening", "tuberculosis", "vasculature",
]
# §2.6: the official code hard-codes the ids of these templates; they are resolved by tokenising
# the strings (same ids with the official vocab: [219,149,152,422,158] and [219,149,152]).
TEMPLATE_LONG = "there is no evidence of"
TEMPLATE_SHORT = "there is no"

CONTEXT_PROB = 0.8          # §2.3 probability of inserting the LLM context
TEMPLATE_WEIGHT = 0.05      # §2.6 γ
MASK_PROB_PLAIN = 0.75      # §2.7 report without entities: word-initial tokens
MASK_PROB_OTHER = 0.70      # §2.7 report with entities: non-entity word-initial tokens
MASK_PROB_ENTITY = 0.75     # §2.7 second pass: entity tokens
MEAN, STD = [0.4721], [0.3037]  # §2.2 pre-training constants (one value broadcast to 3 channels)
SR_WINDOW_DEFAULT = (1, 1)  # §6: reports without an attention label fall back to the centre window


def fail(msg: str) -> None:
    """Prints `msg` to stderr and exits with status 2 (usage / input error)."""
    print(f"peer.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def log(msg: str) -> None:
    print(f"peer.py: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Dataset reading (everything happens before timing)
# ---------------------------------------------------------------------------------------------

def table_files(table_dir: Path) -> list[Path]:
    """The live parquet files of a Delta table.

    With a complete JSON commit log (commit 0 present) the log is replayed (add minus remove), so
    files dropped by an overwrite or compaction are not read twice. Otherwise (no log, or a log
    truncated behind a checkpoint) every `*.parquet` under the table outside `_delta_log` is used.
    """
    log_dir = table_dir / "_delta_log"
    commits = sorted(log_dir.glob("*.json")) if log_dir.is_dir() else []
    if commits and commits[0].name == f"{0:020d}.json":
        live: dict[str, None] = {}  # insertion-ordered set
        for commit in commits:
            for line in commit.read_text().splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = None
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
        files = []
        for rel in live:
            if "://" in rel:
                fail(f"{table_dir}: data file {rel!r} is not relative to the table; only local tables are supported")
            files.append(table_dir / urllib.parse.unquote(rel))
        return files
    if log_dir.is_dir():
        log(f"warning: {log_dir} has no complete JSON log; reading every parquet file under {table_dir}")
    return sorted(p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts)


def read_table(table_dir: Path, columns: list[str], optional: tuple[str, ...] = (), required: bool = True):
    """Reads `columns` (+ whichever `optional` ones exist) of every live file of a table.

    A table without data files is an error (exit 2) when `required`, else `None`.
    """
    files = table_files(table_dir)
    if not files:
        if not required:
            return None
        fail(f"no parquet files in {table_dir} (is --dataset-dir an ecamp dataset?)")
    missing = [f for f in files if not f.is_file()]
    if missing:
        fail(f"{len(missing)} data file(s) named by the Delta log are missing, e.g. {missing[0]}")
    tables = []
    for f in files:
        names = set(pq.read_schema(f).names)
        absent = [c for c in columns if c not in names]
        if absent:
            fail(f"{f}: missing column(s) {absent}")
        tables.append(pq.read_table(f, columns=columns + [c for c in optional if c in names]))
    return pa.concat_tables(tables, promote_options="default")


def load_dataset(dataset_dir: Path):
    """Returns rows of (sample_id, jpeg bytes, report, context or None, (column, row))."""
    samples = read_table(dataset_dir / "samples", ["sample_id", "image", "report"])
    image = samples.column("image")
    jpeg = pc.struct_field(image, "bytes").to_pylist()
    paths = pc.struct_field(image, "path").to_pylist()
    ids = samples.column("sample_id").to_pylist()
    reports = samples.column("report").to_pylist()

    # Newest annotation per sample wins (ties: the later row in file order).
    newest: dict[str, tuple] = {}
    ann_dir = dataset_dir / "annotations"
    ann = None
    if ann_dir.is_dir():
        ann = read_table(ann_dir, ["sample_id", "context", "created_at"], optional=("sr_window",), required=False)
    if ann is not None:
        # Arrow's sort is stable, so equal timestamps keep file order and the later row wins.
        ann = ann.take(pc.sort_indices(ann, [("created_at", "ascending")]))
        windows = ann.column("sr_window").to_pylist() if "sr_window" in ann.column_names else None
        for k, (sid, ctx) in enumerate(zip(ann.column("sample_id").to_pylist(), ann.column("context").to_pylist())):
            win = windows[k] if windows is not None else None
            # sr_window.row is the patch-row offset = the official `label_i`/`column` (§6, §10.8).
            newest[sid] = (ctx, (win["row"], win["col"]) if win else SR_WINDOW_DEFAULT)
    else:
        log(f"warning: no annotations in {ann_dir}; every sample gets an empty context")

    rows = []
    for sid, data, path, report in zip(ids, jpeg, paths, reports):
        if data is None:
            # Image stored by reference: read it now, so the timed loop still works from memory.
            if not path:
                fail(f"sample {sid}: image has neither bytes nor path")
            p = Path(path.removeprefix("file://"))
            data = (p if p.is_absolute() else dataset_dir / p).read_bytes()
        ctx, window = newest.get(sid, (None, SR_WINDOW_DEFAULT))
        rows.append((sid, data, report, ctx, window))
    return rows


# ---------------------------------------------------------------------------------------------
# Per-sample work
# ---------------------------------------------------------------------------------------------

def insert_context(report: str, context: str | None) -> str:
    """§2.3: the official report/context mixing, Python semantics kept exactly.

    `split('.')` keeps the trailing empty piece, so the insertion path appends a '.'; `randint` is
    inclusive; `replace("..", ".")` is one left-to-right pass. A missing context behaves as an
    empty `llm_output` (the official csv always has one; the Rust port does the same).
    """
    context = context or ""
    if random.random() < CONTEXT_PROB:
        pieces = report.split(".")
        loc = random.randint(0, len(pieces))
        # String concatenation piece by piece, as the official loop does.
        sent = ""
        for p in pieces[:loc]:
            sent += p + "."
        sent += context
        for p in pieces[loc:]:
            sent += p + "."
    else:
        sent = report
    return "[CLS] " + sent.replace("..", ".")


class TextPrepOfficial:
    """§2.4-§2.7 with the official code's data structures (see the module docstring)."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, max_len: int):
        self.tok = tokenizer
        self.max_len = max_len
        vocab = tokenizer.get_vocab()
        self.idxtoword = {v: k for k, v in vocab.items()}
        self.pad, self.mask, self.dot = vocab["[PAD]"], vocab["[MASK]"], vocab["."]
        self.t_long = tokenizer.encode(TEMPLATE_LONG, add_special_tokens=False).ids
        self.t_short = tokenizer.encode(TEMPLATE_SHORT, add_special_tokens=False).ids

    def __call__(self, text: str):
        L = self.max_len
        # The official code re-enables truncation and padding on every call.
        self.tok.enable_truncation(max_length=L)
        self.tok.enable_padding(length=L)
        enc = self.tok.encode(text)
        ids = torch.tensor(enc.ids).unsqueeze(0)
        attention_mask = torch.tensor(enc.attention_mask).unsqueeze(0)
        type_ids = torch.tensor(enc.type_ids).unsqueeze(0)
        weights = torch.ones(L).unsqueeze(0)

        # §2.6 step A: greedy template scan, `i < L-4`, element-wise tensor comparisons.
        tl, ts = self.t_long, self.t_short
        templates: list[int] = []
        i = 0
        while i < ids.shape[1] - 4:
            if all(i + k < L and ids[0][i + k] == tl[k] for k in range(len(tl))):
                n = len(tl)
            elif all(i + k < L and ids[0][i + k] == ts[k] for k in range(len(ts))):
                n = len(ts)
            else:
                i += 1
                continue
            for k in range(n):
                weights[0][i + k] = TEMPLATE_WEIGHT
                templates.append(i + k)
            i += n

        masked, descriptors = self.context_mask(ids)

        # §2.6 step C: re-balance so that the weights sum to L.
        n_t, n_d = len(templates), len(descriptors)
        n_dm = len([d for d in descriptors if d in templates])  # list membership, as the code
        if n_d > 0 and n_t > 0:
            f = (0.95 * (n_t - n_dm) + n_d) / (n_d - 0.95 * n_dm)
            for d in descriptors:
                weights[0][d] = weights[0][d] * f
        elif n_t > 0:
            weights[0] = weights[0] * (L / (L - 0.95 * n_t))
        return ids, attention_mask, type_ids, masked, weights

    def context_mask(self, tokens: torch.Tensor):
        """§2.7 `_context_mask`: whole-word masking with entity/descriptor rules."""
        w = self.idxtoword
        masked = deepcopy(tokens)
        L = masked.shape[1]
        entity_pos: list[int] = []
        descriptors: list[int] = []

        # The existence scan does not stop at padding (it visits all of 1..L-2 without an entity).
        entity_exist = False
        for i in range(1, L - 1):
            if w[masked[0][i].item()] in ENTITIES:
                entity_exist = True
                break

        for i in range(1, L - 1):
            if masked[0][i] == self.pad:
                break
            # Whole-word masking: a `##` piece follows its predecessor's decision.
            if masked[0][i - 1] == self.mask and w[masked[0][i].item()][:2] == "##":
                masked[0][i] = self.mask
                continue
            if masked[0][i - 1] != self.mask and w[masked[0][i].item()][:2] == "##":
                continue
            if w[masked[0][i].item()] in ENTITIES:
                entity_pos.append(i)
                for j in (1, 2):
                    if i - j <= 0:
                        break
                    # The '.' test skips that position only; the window crosses sentences (§10.4).
                    if tokens[0][i - j] != self.dot:
                        if i - j not in descriptors:
                            descriptors.append(i - j)
                        # The official "mask the descriptor" branch: it tests the *entity* token
                        # against the entity list, so it never fires (§10.2). Its condition is
                        # still evaluated every time, as in the official code.
                        if w[masked[0][i].item()] not in ENTITIES and masked[0][i - j] != self.mask:
                            masked[0][i - j] = self.mask
            p = random.random()
            if not entity_exist:
                if p < MASK_PROB_PLAIN:
                    masked[0][i] = self.mask
            elif p < MASK_PROB_OTHER and i not in entity_pos and i not in descriptors:
                masked[0][i] = self.mask

        # Second pass: entities (so an entity's `##` continuation stays unmasked, §10.3).
        for i in range(1, L - 1):
            if i in entity_pos and random.random() < MASK_PROB_ENTITY:
                masked[0][i] = self.mask
        return masked, descriptors


class TextPrepLists:
    """The same rules as `TextPrepOfficial` over Python lists/sets; tensors built once at the end."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, max_len: int):
        self.max_len = max_len
        vocab = tokenizer.get_vocab()
        self.pad, self.mask, self.dot = vocab["[PAD]"], vocab["[MASK]"], vocab["."]
        self.t_long = tokenizer.encode(TEMPLATE_LONG, add_special_tokens=False).ids
        self.t_short = tokenizer.encode(TEMPLATE_SHORT, add_special_tokens=False).ids
        size = max(vocab.values()) + 1
        self.is_cont = [False] * size
        self.is_entity = [False] * size
        for tok, tid in vocab.items():
            self.is_cont[tid] = tok.startswith("##")
            self.is_entity[tid] = tok in ENTITIES
        self.tok = tokenizer.from_str(tokenizer.to_str())  # own copy: padding/truncation set once
        self.tok.enable_truncation(max_length=max_len)
        self.tok.enable_padding(length=max_len)

    def __call__(self, text: str):
        L = self.max_len
        enc = self.tok.encode(text)
        ids = enc.ids
        tl, ts = self.t_long, self.t_short
        templates: list[int] = []
        i = 0
        while i < L - 4:
            if ids[i:i + len(tl)] == tl:
                n = len(tl)
            elif ids[i:i + len(ts)] == ts:
                n = len(ts)
            else:
                i += 1
                continue
            templates.extend(range(i, i + n))
            i += n

        masked, descriptors = self.context_mask(ids)

        weights = [1.0] * L
        for t in templates:
            weights[t] = TEMPLATE_WEIGHT
        t_set = set(templates)
        n_t, n_d = len(templates), len(descriptors)
        n_dm = sum(1 for d in descriptors if d in t_set)
        if n_d > 0 and n_t > 0:
            f = (0.95 * (n_t - n_dm) + n_d) / (n_d - 0.95 * n_dm)
            for d in descriptors:
                weights[d] *= f
        elif n_t > 0:
            s = L / (L - 0.95 * n_t)
            weights = [x * s for x in weights]
        row = lambda xs, dtype=torch.int64: torch.tensor(xs, dtype=dtype).unsqueeze(0)  # noqa: E731
        return row(ids), row(enc.attention_mask), row(enc.type_ids), row(masked), row(weights, torch.float32)

    def context_mask(self, tokens: list[int]):
        is_ent, is_cont, mask = self.is_entity, self.is_cont, self.mask
        L = len(tokens)
        masked = list(tokens)
        entity_pos: list[int] = []
        descriptors: list[int] = []
        d_set: set[int] = set()
        entity_exist = any(is_ent[t] for t in tokens[1:L - 1])
        for i in range(1, L - 1):
            t = masked[i]
            if t == self.pad:
                break
            if is_cont[t]:
                if masked[i - 1] == mask:
                    masked[i] = mask
                continue
            ent = is_ent[t]
            if ent:
                entity_pos.append(i)
                for j in (1, 2):
                    if i - j <= 0:
                        break
                    if tokens[i - j] != self.dot and i - j not in d_set:
                        d_set.add(i - j)
                        descriptors.append(i - j)
            p = random.random()
            if not entity_exist:
                if p < MASK_PROB_PLAIN:
                    masked[i] = mask
            elif p < MASK_PROB_OTHER and not ent and i not in d_set:
                masked[i] = mask
        for i in entity_pos:  # ascending, as the official range loop visits them
            if random.random() < MASK_PROB_ENTITY:
                masked[i] = mask
        return masked, descriptors


class EcampPeerDataset(Dataset):
    """Per-sample work of the official `ContextBertDataset.__getitem__` on in-memory rows."""

    def __init__(self, rows, tokenizer: tokenizers.Tokenizer, max_len: int, text_impl: str):
        self.rows = rows
        self.text = (TextPrepOfficial if text_impl == "official" else TextPrepLists)(tokenizer, max_len)
        # §2.2: the official transform, in its order. Grayscale(3) comes after the crop, on the RGB
        # image that `convert('RGB')` produced, exactly as the official code (so the bicubic resize
        # runs on 3 channels). The 224 px copy is made on the GPU inside forward (§2.2), not here.
        self.transform = T.Compose([
            T.RandomResizedCrop(448, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.Grayscale(num_output_channels=3),
            T.ToTensor(),
            T.Normalize(mean=MEAN, std=STD),
        ])

    def __len__(self):
        return len(self.rows)

    def image(self, data: bytes) -> torch.Tensor:
        # The official `pil_loader`: open, then convert('RGB') (decode happens in convert).
        return self.transform(Image.open(io.BytesIO(data)).convert("RGB"))

    def __getitem__(self, index):
        _, data, report, context, (label_i, label_j) = self.rows[index]
        image = self.image(data)
        ids, attention_mask, type_ids, masked, weights = self.text(insert_context(report, context))
        column = torch.tensor(label_i).unsqueeze(0)
        row = torch.tensor(label_j).unsqueeze(0)
        return image, ids, attention_mask, type_ids, masked, weights, column, row


def collate(instances):
    """The official `collate_fn`: stack, `.squeeze()` the (1, L) rows, return the §2.8 dict."""
    image, ids, attn, type_ids, masked, weights, column, row = zip(*instances)
    return {
        "image": torch.stack(image),
        "labels": torch.stack(ids).squeeze(),
        "attention_mask": torch.stack(attn).squeeze(),
        "type_ids": torch.stack(type_ids).squeeze(),
        "ids": torch.stack(masked).squeeze(),
        "weights": torch.stack(weights).squeeze(),
        "column": torch.stack(column).squeeze(),
        "row": torch.stack(row).squeeze(),
    }


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------

def breakdown(ds: EcampPeerDataset, n: int) -> None:
    """Times the image and the text half of `__getitem__` in this process (stderr only)."""
    n = min(n, len(ds))
    t0 = time.perf_counter()
    for k in range(n):
        ds.image(ds.rows[k][1])
    t1 = time.perf_counter()
    for k in range(n):
        _, _, report, context, _ = ds.rows[k]
        ds.text(insert_context(report, context))
    t2 = time.perf_counter()
    log(f"breakdown over {n} samples, 1 process: image {1e3 * (t1 - t0) / n:.2f} ms/sample, "
        f"text {1e3 * (t2 - t1) / n:.2f} ms/sample")


def init_worker(threads: int, _worker_id: int) -> None:
    """DataLoader worker start-up (module level, so it also pickles under the spawn start method)."""
    torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset-dir", required=True, type=Path,
                    help="local ecamp dataset (Delta tables samples/ and annotations/)")
    ap.add_argument("--tokenizer", required=True, type=Path, help="WordPiece tokenizer JSON (mimic_wordpiece.json)")
    ap.add_argument("--workers", required=True, type=int, help="DataLoader worker processes")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads-per-worker", type=int, default=1, help="torch.set_num_threads in workers and main")
    ap.add_argument("--text-impl", choices=("official", "lists"), default="official",
                    help="official: the official code's tensor-element data structures (default); "
                         "lists: same rules over Python lists")
    ap.add_argument("--breakdown", type=int, default=0, metavar="N",
                    help="before the timed run, time image vs text work over N samples in-process (stderr)")
    args = ap.parse_args()

    if args.workers < 0 or args.batch_size < 2 or args.epochs < 1 or args.max_length < 8 or args.threads_per_worker < 1:
        # batch size 1 breaks the official collate's `.squeeze()` (§2.8).
        fail("need --workers >= 0, --batch-size >= 2, --epochs >= 1, --max-length >= 8, --threads-per-worker >= 1")
    if not args.dataset_dir.is_dir():
        fail(f"dataset dir {args.dataset_dir} does not exist")
    if not args.tokenizer.is_file():
        fail(f"tokenizer {args.tokenizer} does not exist")
    torch.set_num_threads(args.threads_per_worker)

    t_load = time.perf_counter()
    rows = load_dataset(args.dataset_dir)
    tokenizer = tokenizers.Tokenizer.from_file(str(args.tokenizer))
    ds = EcampPeerDataset(rows, tokenizer, args.max_length, args.text_impl)
    with_ctx = sum(1 for r in rows if r[3])
    log(f"loaded {len(rows)} samples ({with_ctx} with context, "
        f"{sum(len(r[1]) for r in rows) / 2**20:.1f} MiB of JPEG) in {time.perf_counter() - t_load:.2f} s; "
        f"text impl {args.text_impl}")
    if len(rows) < args.batch_size:
        fail(f"{len(rows)} samples is less than one batch of {args.batch_size} (drop_last=True)")
    if args.breakdown:
        breakdown(ds, args.breakdown)

    loader = DataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        persistent_workers=False, collate_fn=collate,
        worker_init_fn=functools.partial(init_worker, args.threads_per_worker),
    )
    expect = (args.batch_size, 3, 448, 448)
    samples = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:  # a new iterator (and new workers) per epoch, as a training loop pays
            if batch["image"].shape != expect or batch["ids"].shape != (args.batch_size, args.max_length):
                fail(f"unexpected batch shapes {batch['image'].shape}, {batch['ids'].shape}")
            samples += batch["image"].shape[0]
    seconds = time.perf_counter() - start

    print(json.dumps({
        "samples": samples,
        "seconds": round(seconds, 6),
        "samples_per_s": round(samples / seconds, 3),
        "workers": args.workers,
        "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
