"""Read a (user, job, count) CSV on one machine, without Spark: what `jobrec offline` trains on when it runs the
single-machine engine.

The same rows count as the Spark reader counts them (backfill.read_counts_csv with load_counts_csv's checks): ids
are strings, trimmed, and an empty id makes a row bad; the count is a trimmed decimal number (3, 3.0, 0.5, 1e3), and
anything else (text, empty, NaN, infinity, a negative number) makes the row bad; a zero count is a pair shown but not
acted on; a positive count is usable, and the rows of a repeated (user, job) pair add up. Where Spark would pad or
cut a row whose number of fields differs from the header's, this reader skips it and counts it as bad.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from jobrec.batch.backfill import CsvLayout

log = logging.getLogger(__name__)

# what Spark's cast of a trimmed string to a double accepts, less its spellings of NaN and infinity (which make a
# row bad anyway): ASCII digits only, as Arrow's cast (a Unicode digit would pass Python's float())
NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"

# a header longer than this is not a header: a file read with the wrong separator, or not a CSV at all
MAX_HEADER_BYTES = 1 << 24


class NoUsableRows(ValueError):
    """A file without one row that has both ids and a positive count; the message names the column at fault."""


@dataclass(frozen=True, eq=False)
class CountsTable:
    """One entry per distinct (user, job) pair with a positive count, in the order of each pair's first row.

    `user_ids` and `job_ids` are numpy object arrays of str; the entries of one user (or job) are the same str
    object, whose hash Python caches, so pandas.factorize over them hashes each distinct id once. `counts` (float64)
    is the sum over the pair's rows. The row tallies are of the file: rows_bad includes rows with the wrong number
    of fields, rows_zero the rows with both ids and a count of 0."""

    user_ids: np.ndarray
    job_ids: np.ndarray
    counts: np.ndarray
    rows_read: int
    rows_bad: int
    rows_zero: int

    def __len__(self) -> int:
        return len(self.counts)


def read_counts_file(path: str | Path, layout: CsvLayout) -> CountsTable:
    """The usable rows of a counts CSV with a header row (a .gz or .bz2 one is decompressed), repeated pairs
    summed. FileNotFoundError for a missing file, ValueError for a missing column or a file that is not UTF-8 CSV,
    NoUsableRows when no row has both ids and a positive count."""
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if len(layout.sep) != 1:
        raise ValueError(f"separator {layout.sep!r}: expected one character")
    columns, has_data = _read_header(path, layout.sep)
    wanted = [layout.user_col, layout.job_col, layout.count_col]
    for name in wanted:
        if name not in columns:
            raise ValueError(f"{path}: no column {name!r} (columns: {', '.join(columns)})")
    if not has_data:
        raise NoUsableRows(f"{path}: no data rows")
    table, ragged, ragged_example = _read_columns(path, layout.sep, list(dict.fromkeys(wanted)))

    users = pc.utf8_trim_whitespace(table[layout.user_col])
    jobs = pc.utf8_trim_whitespace(table[layout.job_col])
    raw_counts = table[layout.count_col]
    counts = _parse_counts(pc.utf8_trim_whitespace(raw_counts))
    has_user = pc.greater(pc.utf8_length(users), 0).to_numpy()
    has_job = pc.greater(pc.utf8_length(jobs), 0).to_numpy()
    good = has_user & has_job & (counts >= 0)  # a count that is not a finite number is NaN: never >= 0
    usable = good & (counts > 0)
    rows_bad = int(table.num_rows - good.sum()) + ragged
    rows_zero = int(good.sum() - usable.sum())
    if ragged:
        log.warning(
            "%s: skipped %d rows whose number of fields differs from the header's %d (for example %r)",
            path,
            ragged,
            len(columns),
            ragged_example,
        )
    if not usable.any():
        raise NoUsableRows(
            _why_nothing_is_usable(path, layout, table.num_rows, ragged_example, has_user, has_job, counts, raw_counts)
        )

    keep = pa.array(usable)
    user_codes, user_names = _factorize(users.filter(keep))
    job_codes, job_names = _factorize(jobs.filter(keep))
    pair_keys = user_codes.astype(np.int64) * len(job_names) + job_codes
    # first-appearance order, as a reader of the file would list the pairs; bincount adds up repeated pairs
    pairs = pc.dictionary_encode(pa.array(pair_keys))
    pair_codes, distinct_keys = pairs.indices.to_numpy(), pairs.dictionary.to_numpy()
    summed = np.bincount(pair_codes, weights=counts[usable], minlength=len(distinct_keys))
    return CountsTable(
        user_ids=user_names[distinct_keys // len(job_names)],
        job_ids=job_names[distinct_keys % len(job_names)],
        counts=summed.astype(np.float64),
        rows_read=table.num_rows + ragged,
        rows_bad=rows_bad,
        rows_zero=rows_zero,
    )


def binary_counts(table: CountsTable) -> CountsTable:
    """The same pairs, each counting once whatever its count (`--binary`, for files whose counts are noise)."""
    return replace(table, counts=np.ones(len(table.counts), dtype=np.float64))


def _read_header(path: str, sep: str) -> tuple[list[str], bool]:
    """The header's column names, and whether anything but blank lines follows it."""
    with pa.input_stream(path, compression="detect") as stream:
        head = b""
        while True:
            block = stream.read(1 << 16)
            head += block
            text = head[3:] if head.startswith(codecs.BOM_UTF8) else head
            # blank lines before the header are skipped, as Arrow (and Spark) skip them
            stripped = text.lstrip(b"\r\n")
            end = min((i for i in (stripped.find(b"\n"), stripped.find(b"\r")) if i >= 0), default=-1)
            if end >= 0 or not block:
                break
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError(f"{path}: no line break in the first {MAX_HEADER_BYTES} bytes: is it a CSV file?")
        line = stripped if end < 0 else stripped[:end]
        rest = b"" if end < 0 else stripped[end:].lstrip(b"\r\n")
        has_data = bool(rest) or bool(stream.read(1 << 16).strip(b"\r\n"))
    if not line:
        raise NoUsableRows(f"{path}: the file is empty: expected a header row naming the columns, then data rows")
    try:
        header = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(_find_not_utf8(path)) from None
    # the csv module and Arrow split a line alike (RFC 4180 quoting, "" for a quote inside quotes)
    return next(csv.reader(io.StringIO(header), delimiter=sep)), has_data


def _read_columns(path: str, sep: str, columns: list[str]) -> tuple[pa.Table, int, str | None]:
    """The named columns as strings (never inferred as numbers: "007" stays "007"), with how many rows had the
    wrong number of fields (skipped) and the first of them."""
    skipped = itertools.count()  # next() on it is atomic, and Arrow may call the handler from several threads
    examples: list[str] = []

    def skip_ragged(row: pacsv.InvalidRow) -> str:
        next(skipped)
        if not examples:
            examples.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=sep, invalid_row_handler=skip_ragged),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError) as e:  # OSError: a damaged .gz
        if "UTF8" in str(e):
            raise ValueError(_find_not_utf8(path)) from None
        raise ValueError(f"{path}: not a CSV file with separator {sep!r} ({e})") from None
    return table, next(skipped), examples[0] if examples else None


def _parse_counts(trimmed: pa.ChunkedArray) -> np.ndarray:
    """float64 per row; NaN where the text is not a finite decimal number."""
    numeric = pc.match_substring_regex(trimmed, NUMBER)
    values = pc.cast(pc.if_else(numeric, trimmed, pa.scalar(None, pa.string())), pa.float64())
    out = values.to_numpy()  # a null (not a number) becomes NaN
    # 1e999 is a number too large for a double: not a count either
    return np.where(np.isfinite(out), out, np.nan)


def _factorize(ids: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 code per row, object array of the distinct strings): Arrow's hash in C, one dictionary for all
    chunks."""
    encoded = pc.dictionary_encode(ids).unify_dictionaries()
    codes = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])
    return codes, encoded.chunks[0].dictionary.to_numpy(zero_copy_only=False)


def _why_nothing_is_usable(
    path: str,
    layout: CsvLayout,
    rows: int,
    ragged_example: str | None,
    has_user: np.ndarray,
    has_job: np.ndarray,
    counts: np.ndarray,
    raw_counts: pa.ChunkedArray,
) -> str:
    """Why no row is usable, naming the column at fault and showing a value from it."""
    if rows == 0 and ragged_example is None:
        return f"{path}: no data rows"
    if rows == 0:
        return (
            f"{path}: no row has as many fields as the header (for example {ragged_example!r}); "
            "pass --sep if the columns are split differently"
        )
    for column, present in ((layout.user_col, has_user), (layout.job_col, has_job)):
        if not present.any():
            return f"{path}: column {column!r} is empty in every row"
    if not (counts > 0).any():
        values = raw_counts.to_pylist()
        example = next((v for v in values if v.strip()), values[0])
        return (
            f"{path}: no row has a positive number in column {layout.count_col!r} (for example {example!r}); "
            "pass --count-col to name another column, or --sep if the columns are split differently"
        )
    return (
        f"{path}: no row has a {layout.user_col!r}, a {layout.job_col!r} and a positive {layout.count_col!r} "
        "together: the rows with a positive count lack an id"
    )


def _find_not_utf8(path: str) -> str:
    """Where the file stops being UTF-8, read block by block (only when Arrow found that it does)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with pa.input_stream(path, compression="detect") as stream:
        while True:
            block = stream.read(1 << 20)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                # e.object: the bytes of a character cut at the last block's end, then this block
                if offset == 0 and block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    return f"{path}: UTF-16 text, expected UTF-8: save the file as UTF-8"
                at = offset - (len(e.object) - len(block)) + e.start
                line += e.object.count(b"\n", 0, e.start)
                return (
                    f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {at} (line {line}); "
                    "save the file as UTF-8"
                )
            if not block:
                return f"{path}: not UTF-8 text: save the file as UTF-8"
            offset += len(block)
            line += block.count(b"\n")
