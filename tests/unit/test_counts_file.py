"""Reading a counts CSV without Spark: the same rows count, bad and zero as the Spark reader's, and a hostile file
gives a message naming the file, never an Arrow traceback.

The expected answers are worked out by hand in each test; the property test checks the reader against a reference
written here with Python's csv module."""

from __future__ import annotations

import csv
import gzip
import math
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrec.batch.backfill import CsvLayout
from jobrec.batch.counts_file import CountsTable, NoUsableRows, binary_counts, read_counts_file

LAYOUT = CsvLayout()


def _write(tmp_path: Path, content: str | bytes, name: str = "counts.csv") -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _pairs(table: CountsTable) -> dict[tuple[str, str], float]:
    return {(u, j): float(c) for u, j, c in zip(table.user_ids, table.job_ids, table.counts, strict=True)}


def test_ids_stay_strings_trimmed_and_repeated_pairs_add_up(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "userId,jobId,Clicks\n"
        "007, 1e3 ,2\n"  # "007" and "1e3" are ids, not numbers
        "  007,1e3,0.5\n"  # the same pair once trimmed: 2 + 0.5
        "7,1e3,1\n"  # "7" is another user than "007"
        "007,j2,4\n",
    )
    table = read_counts_file(path, LAYOUT)
    assert _pairs(table) == {("007", "1e3"): 2.5, ("7", "1e3"): 1.0, ("007", "j2"): 4.0}
    assert (table.rows_read, table.rows_bad, table.rows_zero) == (4, 0, 0)
    assert table.counts.dtype == np.float64 and table.user_ids.dtype == object


def test_pairs_come_in_the_order_of_their_first_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "userId,jobId,Clicks\nb,y,1\na,x,1\nb,y,1\nc,x,1\n")
    table = read_counts_file(path, LAYOUT)
    assert list(zip(table.user_ids, table.job_ids, strict=True)) == [("b", "y"), ("a", "x"), ("c", "x")]


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3.0), ("3.0", 3.0), ("0.5", 0.5), ("1e3", 1000.0), (" 2 ", 2.0), ("+4", 4.0), (".5", 0.5), ("5.", 5.0)],
)
def test_a_count_is_any_decimal_spelling_of_a_number(tmp_path: Path, text: str, value: float) -> None:
    path = _write(tmp_path, f'userId,jobId,Clicks\nu,j,"{text}"\n')
    assert _pairs(read_counts_file(path, LAYOUT)) == {("u", "j"): value}


def test_rows_without_ids_or_a_finite_count_are_bad_and_zero_counts_are_shown_only(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "userId,jobId,Clicks\n"
        "u1,j1,3\n"  # usable
        "u2,j1,0\n"  # zero: shown, not acted on
        "u3,j1,0.0\n"  # zero
        "u4,j1,abc\n"  # bad: text
        "u5,j1,\n"  # bad: empty
        "u6,j1,NaN\n"  # bad: not a number
        "u7,j1,inf\n"  # bad: infinite
        "u8,j1,-Infinity\n"  # bad
        "u9,j1,-2\n"  # bad: negative
        "u10,j1,1e999\n"  # bad: too large for a double
        "u11,j1,1_0\n"  # bad: Python's float() would say 10
        ",j1,3\n"  # bad: no user
        "u12,   ,3\n"  # bad: a job id of spaces only
        "u13,j1,0x10\n",  # bad
    )
    table = read_counts_file(path, LAYOUT)
    assert _pairs(table) == {("u1", "j1"): 3.0}
    assert (table.rows_read, table.rows_bad, table.rows_zero) == (14, 11, 2)


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path: Path) -> None:
    path = _write(tmp_path, "user,jobId,Clicks\nu,j,1\n")
    with pytest.raises(ValueError, match=r"counts\.csv: no column 'userId' \(columns: user, jobId, Clicks\)"):
        read_counts_file(path, LAYOUT)


def test_another_layout_reads_its_own_separator_and_names(tmp_path: Path) -> None:
    # extra columns are ignored, the order of the columns does not matter
    path = _write(tmp_path, "hours;extra;item;person\n1,5;x;i1;p1\n2;y;i1;p1\n")
    table = read_counts_file(path, CsvLayout(sep=";", user_col="person", job_col="item", count_col="hours"))
    # "1,5" is not a number (a decimal comma), so only the second row counts
    assert _pairs(table) == {("p1", "i1"): 2.0}
    assert table.rows_bad == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("userId,jobId,Clicks", "no data rows"),
        ("userId,jobId,Clicks\r\n\r\n", "no data rows"),
        ("userId,jobId,Clicks\n,j1,3\n  ,j2,4\n", "column 'userId' is empty in every row"),
        ("userId,jobId,Clicks\nu1,,3\n", "column 'jobId' is empty in every row"),
        ("userId,jobId,Clicks\nu1,j1,\nu2,j2,abc\nu3,j3,0\n", "(for example 'abc'); pass --count-col"),
        ("userId,jobId,Clicks\n,j1,3\nu2,,4\n", "no row has a 'userId', a 'jobId' and a positive 'Clicks' together"),
        ("userId,jobId,Clicks\nu1;j1;3\n", "no row has as many fields as the header (for example 'u1;j1;3')"),
    ],
)
def test_no_usable_row_names_the_column_at_fault(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(NoUsableRows) as caught:
        read_counts_file(path, LAYOUT)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_the_count_column_message_says_no_positive_number(tmp_path: Path) -> None:
    path = _write(tmp_path, "userId,jobId,Clicks\nu1,j1,abc\n")
    with pytest.raises(NoUsableRows, match="no row has a positive number in column 'Clicks' \\(for example 'abc'\\)"):
        read_counts_file(path, LAYOUT)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_an_empty_file_asks_for_a_header(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(NoUsableRows, match="counts.csv: the file is empty: expected a header row"):
        read_counts_file(path, LAYOUT)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.csv does not exist"):
        read_counts_file(str(tmp_path / "nothing.csv"), LAYOUT)


def test_rows_with_too_many_or_too_few_fields_are_skipped_as_bad(tmp_path: Path) -> None:
    path = _write(tmp_path, "userId,jobId,Clicks\nu1,j1,3\nu2,j2\nu3,j3,4,5\nu1,j1,2\n   \n")
    table = read_counts_file(path, LAYOUT)
    # the two short rows ("u2,j2" and the line of spaces) and the long one are bad; u1's rows add up to 5
    assert _pairs(table) == {("u1", "j1"): 5.0}
    assert (table.rows_read, table.rows_bad, table.rows_zero) == (5, 3, 0)


def test_quoted_fields_keep_separators_and_doubled_quotes(tmp_path: Path) -> None:
    path = _write(tmp_path, 'userId,jobId,Clicks\n"Smith, J","the ""best"" job"," 3 "\n')
    assert _pairs(read_counts_file(path, LAYOUT)) == {("Smith, J", 'the "best" job'): 3.0}


def test_a_byte_order_mark_and_crlf_line_ends_read_as_plain_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbfuserId,jobId,Clicks\r\nu1,j1,3\r\nu2,j1,1\r\n")
    table = read_counts_file(path, LAYOUT)
    assert _pairs(table) == {("u1", "j1"): 3.0, ("u2", "j1"): 1.0}
    assert table.rows_bad == 0


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    # "José" in Latin-1: the é is the single byte 0xe9, on the third line, 31 bytes from the start
    path = _write(tmp_path, "userId,jobId,Clicks\nu1,j1,3\nJosé,j2,4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"counts\.csv: not UTF-8 text: byte 0xe9 at offset 31 \(line 3\)"):
        read_counts_file(path, LAYOUT)


def test_a_header_that_is_not_utf8_names_the_first_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "usérId,jobId,Clicks\nu1,j1,3\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"byte 0xe9 at offset 2 \(line 1\)"):
        read_counts_file(path, LAYOUT)


def test_the_place_of_a_bad_byte_is_counted_across_read_blocks(tmp_path: Path) -> None:
    # the file is checked a megabyte at a time: put a valid "é" (2 bytes) across the first boundary, so a
    # character cut in two must not be taken for a bad one, and the bad byte well into the second block
    rows = b"userId,jobId,Clicks\n" + b"u1,j1,1\n" * 131_000
    rows += b"x" * ((1 << 20) - 2 - len(rows) - 6) + b",j1,1\n"  # a long id: the rows end 2 bytes before 1 MiB
    prefix = rows + b"u\xc3"  # "u" and the first byte of "é" end exactly at the boundary
    assert len(prefix) == 1 << 20
    content = prefix + b"\xa9,j1,1\n" + b"u2,j1,1\n" * 10 + b"bad\xff,j1,1\n"
    bad_at = content.index(b"\xff")
    bad_line = content[:bad_at].count(b"\n") + 1
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=rf"byte 0xff at offset {bad_at} \(line {bad_line}\)"):
        read_counts_file(path, LAYOUT)


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = _write(tmp_path, "userId,jobId,Clicks\nu1,j1,3\n".encode("utf-16"))
    with pytest.raises(ValueError, match="UTF-16 text, expected UTF-8"):
        read_counts_file(path, LAYOUT)


def test_a_gzipped_file_is_read_like_the_plain_one(tmp_path: Path) -> None:
    path = _write(tmp_path, gzip.compress(b"userId,jobId,Clicks\nu1,j1,3\nu1,j1,1\n"), "counts.csv.gz")
    assert _pairs(read_counts_file(path, LAYOUT)) == {("u1", "j1"): 4.0}


def test_binary_counts_count_every_pair_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "userId,jobId,Clicks\nu1,j1,3\nu1,j1,2\nu2,j1,0.5\nu2,j2,0\n")
    table = binary_counts(read_counts_file(path, LAYOUT))
    # the repeated pair counts once, not twice; the zero row stays out
    assert _pairs(table) == {("u1", "j1"): 1.0, ("u2", "j1"): 1.0}
    assert (table.rows_read, table.rows_bad, table.rows_zero) == (4, 0, 1)


# --- property: the reader agrees with a reference built on Python's csv module ---

# ids and counts padded with whitespace, around cores that repeat (so pairs add up) or are anything at all
PAD = st.sampled_from(["", "", " ", "\t", "  "])
ID_CORES = st.one_of(
    st.sampled_from(["u1", "u2", "007", "7", "", "a,b", 'say "hi"', "é中🙂"]),
    st.text(alphabet=st.sampled_from(list("ab7 \t\",;|'éß中🙂")), max_size=4),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=3),
)
COUNT_CORES = st.one_of(
    st.sampled_from(["3", "0", "0.0", "-0", "0.5", "1e3", "+.5", "5.", "-1", "abc", "", "NaN", "inf", "1e999"]),
    st.sampled_from(["1_0", "٣", "0x1", "1,5", "Infinity"]),
    st.integers(-3, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
IDS = st.tuples(PAD, ID_CORES, PAD).map("".join)
COUNTS = st.tuples(PAD, COUNT_CORES, PAD).map("".join)
ROW = st.tuples(IDS, IDS, COUNTS)
# a row that is usable once trimmed, so that most files have some
GOOD_ROW = st.tuples(
    st.tuples(PAD, st.sampled_from(["u1", "u2", "007", "a,b", "é"]), PAD).map("".join),
    st.tuples(PAD, st.sampled_from(["j1", "j 2", 'say "hi"', "中"]), PAD).map("".join),
    st.tuples(PAD, st.sampled_from(["1", "2.5", "1e3", "+.5", "5."]), PAD).map("".join),
)
# now and then a row with a field too few or too many
RAGGED = st.one_of(st.tuples(IDS, IDS), st.tuples(IDS, IDS, COUNTS, IDS))


def _reference_count(text: str) -> float | None:
    """A finite decimal number written in ASCII, or None; float() alone would also take "1_0" and Arabic digits."""
    text = text.strip()
    if not text.isascii() or "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reference_read(path: str, layout: CsvLayout) -> tuple[dict[tuple[str, str], float], int, int, int]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=layout.sep)
        header = next(reader)
        at = {name: i for i, name in enumerate(header)}
        pairs: dict[tuple[str, str], float] = defaultdict(float)
        read = bad = zero = 0
        for row in reader:
            if not row:  # a blank line is no row
                continue
            read += 1
            if len(row) != len(header):
                bad += 1
                continue
            user, job = row[at[layout.user_col]].strip(), row[at[layout.job_col]].strip()
            count = _reference_count(row[at[layout.count_col]])
            if not user or not job or count is None or count < 0:
                bad += 1
            elif count == 0:
                zero += 1
            else:
                pairs[(user, job)] += count
    return dict(pairs), read, bad, zero


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.one_of(GOOD_ROW, ROW, ROW, RAGGED), min_size=1, max_size=30),
    sep=st.sampled_from([",", ";", "\t", "|"]),
    order=st.permutations(["userId", "jobId", "Clicks"]),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_the_reader_agrees_with_a_csv_module_reference(
    rows: list[tuple[str, ...]], sep: str, order: list[str], line_end: str
) -> None:
    layout = CsvLayout(sep=sep)
    position = {"userId": 0, "jobId": 1, "Clicks": 2}
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "counts.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=sep, lineterminator=line_end)
            writer.writerow(order)
            for row in rows:
                # a full row is written in the header's column order; a ragged one as it is
                writer.writerow([row[position[c]] for c in order] if len(row) == 3 else row)
        expected, read, bad, zero = _reference_read(path, layout)
        if not expected:
            with pytest.raises(NoUsableRows):
                read_counts_file(path, layout)
            return
        table = read_counts_file(path, layout)
    assert _pairs(table) == pytest.approx(expected)
    assert len(table) == len(expected)
    assert (table.rows_read, table.rows_bad, table.rows_zero) == (read, bad, zero)
