"""TextTable: columns, TSV quoting, encodings, malformed rows, duplicate ids, interaction keys; and clear_text."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ducho.config.schema import TextModelSpec, TextualSource
from ducho.errors import ConfigError, DuchoError
from ducho.ids import RecordKey
from ducho.preprocess.text import clear_text
from ducho.sources.base import Skip
from ducho.sources.textual import TextTable


def write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def table(path: Path, source: str = "items", **settings: object) -> TextTable:
    spec = TextualSource(input_path=str(path), output_path="o", model=[{"model_name": "m"}], **settings)
    return TextTable(path, spec, source, f"textual.{source}")


SPEC = TextModelSpec(model_name="m")


def read(t: TextTable) -> tuple[list, list[tuple[RecordKey, str]]]:
    scan = t.scan()
    entries = list(t.records(scan, SPEC))
    skips = [e for e in entries if isinstance(e, Skip)]
    return scan.skipped + skips, [(r.key, r.payload) for r in entries if not isinstance(r, Skip)]


def test_item_defaults_first_column_id_last_column_text(tmp_path: Path) -> None:
    t = table(write(tmp_path / "items.tsv", ["asin", "title", "description"],
                    [["i1", "Shoe", "A light shoe"], ["i2", "Tent", "  For two  "]]))
    assert (t.columns.item, t.columns.text, t.columns.user) == (0, (2,), None)
    skipped, records = read(t)
    assert skipped == [] and records == [(RecordKey("i1"), "A light shoe"), (RecordKey("i2"), "For two")]


def test_interaction_defaults_user_item_last_text(tmp_path: Path) -> None:
    t = table(write(tmp_path / "r.tsv", ["user", "item", "rating", "review"],
                    [["u1", "i1", "5", "Great"], ["u2", "i1", "1", "Bad"]]), "interactions")
    skipped, records = read(t)
    assert records == [(RecordKey("i1", "u1"), "Great"), (RecordKey("i1", "u2"), "Bad")]
    assert [k.stem for k, _ in records] == ["u1__i1", "u2__i1"] and records[0][0].label == "u1__i1"


def test_explicit_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "r.tsv", ["review", "item_id", "stars", "user_id"], [["Nice", "i9", "4", "u7"]])
    _, records = read(table(path, "interactions", user_column="user_id", item_column="item_id", text_column="review"))
    assert records == [(RecordKey("i9", "u7"), "Nice")]
    _, records = read(table(path, item_column="user_id", text_column="stars"))
    assert records == [(RecordKey("u7"), "4")]


def test_text_columns_joined_by_a_space(tmp_path: Path) -> None:
    path = write(tmp_path / "i.tsv", ["id", "title", "brand", "desc"],
                 [["i1", "Shoe", "Acme", " light "], ["i2", "Tent", "", "for two"]])
    _, records = read(table(path, text_column=["title", "desc", "brand"]))
    assert records == [(RecordKey("i1"), "Shoe light Acme"), (RecordKey("i2"), "Tent for two")]


def test_quoted_fields_with_tabs_quotes_and_newlines(tmp_path: Path) -> None:
    texts = ['tab\there', 'say "hi" twice ""', "line one\nline two\r\nthree", '"fully quoted"']
    path = write(tmp_path / "i.tsv", ["id", "text"], [[f"i{n}", text] for n, text in enumerate(texts)])
    skipped, records = read(table(path))
    assert skipped == [] and [text for _, text in records] == texts


def test_bom_and_non_ascii_text_intact(tmp_path: Path) -> None:
    texts = ["日本語のレビュー：とても良い本です。", "Ελληνικά: πολύ καλό βιβλίο", "Caffè perfetto, crème brûlée"]
    path = tmp_path / "i.tsv"
    body = "item_id\ttext\n" + "".join(f"é{n}\t{text}\n" for n, text in enumerate(texts))
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    t = table(path, item_column="item_id", text_column="text")
    assert t.header == ["item_id", "text"]
    skipped, records = read(t)
    assert skipped == [] and records == [(RecordKey(f"é{n}"), text) for n, text in enumerate(texts)]


def test_blank_lines_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "i.tsv"
    path.write_text("id\ttext\n\ni1\tone\n\n\ni2\ttwo\n\n", encoding="utf-8")
    t = table(path)
    scan = t.scan()
    assert (scan.rows, scan.kept, scan.skipped) == (2, 2, [])
    assert [r.payload for r in t.records(scan, SPEC)] == ["one", "two"]


def test_malformed_rows_are_skipped_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "i.tsv"
    path.write_text("id\ttext\ni1\tone\ni2\ttwo\textra\ni3\ni4\tfour\n", encoding="utf-8")
    skipped, records = read(table(path))
    assert [k.item for k, _ in records] == ["i1", "i4"]
    assert [(s.label, s.origin, s.reason) for s in skipped] == [
        ("i2", "i.tsv: row 2", "malformed row: 3 fields, the header has 2"),
        ("i3", "i.tsv: row 3", "malformed row: 1 fields, the header has 2")]


def test_missing_id_is_skipped(tmp_path: Path) -> None:
    skipped, records = read(table(write(tmp_path / "i.tsv", ["id", "text"], [["  ", "x"], ["i2", "y"]])))
    assert [s.reason for s in skipped] == ["missing id"] and records == [(RecordKey("i2"), "y")]


@pytest.mark.parametrize("policy, kept, skipped_rows, note", [
    ("first", [("i1", "first"), ("i2", "other")], [3, 4], "(3 rows; duplicate_ids: first, kept one)"),
    ("last", [("i2", "other"), ("i1", "third")], [1, 3], "(3 rows; duplicate_ids: last, kept one)"),
    ("skip_all", [("i2", "other")], [1, 3, 4], "(3 rows; duplicate_ids: skip_all, none kept)"),
])
def test_duplicate_id_policies(tmp_path: Path, policy: str, kept: list, skipped_rows: list[int], note: str) -> None:
    path = write(tmp_path / "i.tsv", ["id", "text"], [["i1", "first"], ["i2", "other"], [" i1", "second"],
                                                      ["i1", "third"]])
    skipped, records = read(table(path, duplicate_ids=policy))
    assert [(k.item, text) for k, text in records] == kept
    assert sorted(int(s.origin.rsplit(" ", 1)[1]) for s in skipped) == skipped_rows
    assert all(s.label == "i1" and s.reason == f"duplicate id {note}" for s in skipped)


@pytest.mark.parametrize("key, name, suggestion", [
    ("text_column", "descripton", "description"), ("item_column", "itemid", "item_id")])
def test_missing_column_names_the_key_and_suggests(tmp_path: Path, key: str, name: str, suggestion: str) -> None:
    path = write(tmp_path / "items.tsv", ["item_id", "title", "description"], [["i1", "t", "d"]])
    with pytest.raises(ConfigError) as caught:
        table(path, **{key: name})
    text = str(caught.value)
    assert text.startswith(f"textual.items.{key}: column {name!r} is not in items.tsv")
    assert "columns: item_id, title, description" in text and f"(did you mean '{suggestion}'?)" in text


def test_invalid_utf8_row_is_skipped_others_survive(tmp_path: Path) -> None:
    path = tmp_path / "i.tsv"
    path.write_bytes("id\ttext\ni1\tcafé\n".encode() + b"i2\tbad \xff\xfe bytes\n" + "i3\tκαλό\n".encode())
    skipped, records = read(table(path))
    assert records == [(RecordKey("i1"), "café"), (RecordKey("i3"), "καλό")]
    assert [(s.label, s.origin, s.reason) for s in skipped] == [("i2", "i.tsv: row 2", "invalid UTF-8")]


def test_interaction_ids_that_share_a_file_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "r.tsv", ["user", "item", "text"], [["a__b", "c", "x"], ["a", "b__c", "y"]])
    assert RecordKey("c", "a__b") != RecordKey("b__c", "a")
    with pytest.raises(DuchoError, match=r"ids 'a__b__c' and 'a__b__c' would be written to the same file a__b__c\.npy"):
        table(path, "interactions").scan()


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="textual.items.input_path: .* is not a file"):
        table(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    with pytest.raises(DuchoError, match="the TSV is empty"):
        table(tmp_path / "empty.tsv")


@pytest.mark.parametrize("text, expected", [
    ("Hello, world! 123 (v2.0) #1 $5 @me", "Hello world v me"),
    ("Caffè perfetto: crème brûlée, 42 °C.", "Caffè perfetto crème brûlée C"),
    ("Ελληνικά: πολύ καλό!", "Ελληνικά πολύ καλό"),
    ("Привет, мир! 2024", "Привет мир"),
    ("日本語のレビュー：とても良い本です。", "日本語のレビュー とても良い本です"),
    ("हिन्दी में समीक्षा। १२३", "हिन्दी में समीक्षा"),
    ("e\u0301cole", "école"),
    ("don't 'quoted' rock'n'roll x' 'y", "don't quoted rock'n'roll x y"),
    ("a_b-c\ttab\n\nnew 🎸", "a b c tab new"),
])
def test_clear_text(text: str, expected: str) -> None:
    assert clear_text(text) == expected


def test_clear_text_keeps_combining_marks() -> None:
    word = "हिन्दी"  # HA, I-sign, NA, VIRAMA, DA, II-sign: marks must stay attached to their letters
    assert clear_text(f"({word})") == word and "\u094d" in clear_text(word)


def test_clear_text_keeps_typographic_apostrophe_in_words() -> None:
    # U+2019 is the apostrophe most phones type; an in-word one must survive like the ASCII one does
    assert clear_text("don\u2019t stop") == "don\u2019t stop"
