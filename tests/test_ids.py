"""RecordKey.stem / safe_stem: readable ids unchanged, dangerous ones encoded, one-to-one, long ids shortened."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from ducho.ids import MAX_STEM_BYTES, RecordKey, safe_stem

DANGEROUS = ["/", "a/b", "../../etc/passwd", "/abs", "\\", "a\\b", "..\\..\\x", "..", ".", ".hidden", "...",
             "%", "50%", "\x00", "a\x00b", "\x01", "\x1f", "\x7f", "\n", "tab\there", "line\r\n", " ", "a b",
             "a:b", "a*b?c", "<x>|\"y\"", "\u2028", "\u202e"]

TRICKY = ["a/b", "a%2Fb", "a%252Fb", "%2F", "%", "%25", "a b", "a%20b", "a_b", "a__b", "1", "01", " 1", "1 ",
          ".", "..", "%2E", "%2E.", "%2E%2E", ".a", "%2Ea", "a.", "é", "e\u0301", "\x00", "%00", "A", "a",
          "a\\b", "a%5Cb", "x\ny", "x%0Ay", "日本", "%E6%97%A5%E6%9C%AC", "~", "%7E"]


@pytest.mark.parametrize("item", ["item42", "42", "0", "007", "B00ABC-x_y.z", "a,b+c=d@e!f$g&h'i(j)k[l]m{n}o#p",
                                  "café", "日本語", "Ελληνικά", "i.1"])
def test_plain_and_integer_ids_are_unchanged(item: str) -> None:
    assert safe_stem(item) == item
    assert RecordKey(item).stem == item
    assert RecordKey(item, user="u1").stem == f"u1__{item}"


def test_integer_like_ids_keep_their_text() -> None:
    assert [RecordKey(str(n)).stem for n in (1, 10, 12345678901234567890)] == ["1", "10", "12345678901234567890"]


@pytest.mark.parametrize("item", DANGEROUS)
def test_dangerous_ids_stay_inside_the_folder(tmp_path: Path, item: str) -> None:
    for key in (RecordKey(item), RecordKey("i", user=item), RecordKey(item, user=item)):
        stem = key.stem
        assert "/" not in stem and "\\" not in stem and "\x00" not in stem
        assert not stem.startswith(".") and stem not in ("", ".", "..")
        assert all(ch.isprintable() and not ch.isspace() for ch in stem), repr(stem)
        target = tmp_path / f"{stem}.npy"
        assert target.resolve().parent == tmp_path.resolve()
        target.write_bytes(b"x")  # the file system accepts the name
        assert target.read_bytes() == b"x"


def test_specific_encodings() -> None:
    assert safe_stem("a/b") == "a%2Fb"
    assert safe_stem("a\\b") == "a%5Cb"
    assert safe_stem("..") == "%2E."
    assert safe_stem(".hidden") == "%2Ehidden"
    assert safe_stem("50%") == "50%25"
    assert safe_stem("a\x00b") == "a%00b"
    assert safe_stem("a b") == "a%20b"
    assert safe_stem("\u2028") == "%E2%80%A8"


@pytest.mark.parametrize("item", TRICKY + DANGEROUS)
def test_stem_decodes_back_to_the_id(item: str) -> None:
    assert unquote(safe_stem(item), errors="strict") == item


def test_encoding_is_one_to_one_on_tricky_ids(tmp_path: Path) -> None:
    ids = list(dict.fromkeys(TRICKY + DANGEROUS))
    stems = [RecordKey(i).stem for i in ids]
    assert len(set(stems)) == len(ids)
    for stem in stems:  # and distinct names stay distinct files on this file system
        (tmp_path / f"{stem}.npy").write_bytes(b"")
    assert len(list(tmp_path.iterdir())) == len(ids)
    pairs = [RecordKey(i, user=u) for u in ("u", "u/", "u%2F") for i in ("i", "/i", "%2Fi")]
    assert len({p.stem for p in pairs}) == len(pairs)


def test_empty_id_does_not_share_a_stem_with_nul() -> None:
    assert safe_stem("\x00") == "%00"
    assert safe_stem("") != safe_stem("\x00")


@pytest.mark.parametrize("long_ids", [
    ["x" * 300, "x" * 299 + "y", "x" * 301, "y" + "x" * 299],
    ["日" * 200, "日" * 199 + "本", "日" * 201],
    ["/" * 100, "/" * 101, "%" * 150],
])
def test_long_ids_are_shortened_and_stay_distinct(tmp_path: Path, long_ids: list[str]) -> None:
    stems = [RecordKey(i).stem for i in long_ids]
    assert all(len(s.encode("utf-8")) < 255 for s in stems)
    assert all(len(s.encode("utf-8")) <= MAX_STEM_BYTES for s in stems)
    assert len(set(stems)) == len(long_ids)
    assert stems == [RecordKey(i).stem for i in long_ids]  # deterministic
    for stem in stems:
        (tmp_path / f"{stem}.npy").write_bytes(b"")
        assert (tmp_path / f"{stem}.npy").resolve().parent == tmp_path.resolve()
    assert len(list(tmp_path.iterdir())) == len(long_ids)


def test_long_pair_keys_are_shortened() -> None:
    keys = [RecordKey("i", user="u" * 300), RecordKey("i" * 300, user="u"), RecordKey("j", user="u" * 300)]
    stems = [k.stem for k in keys]
    assert all(len(s.encode("utf-8")) < 255 for s in stems) and len(set(stems)) == 3


def test_stem_length_boundary() -> None:
    assert RecordKey("a" * MAX_STEM_BYTES).stem == "a" * MAX_STEM_BYTES
    shortened = RecordKey("a" * (MAX_STEM_BYTES + 1)).stem
    assert shortened != "a" * (MAX_STEM_BYTES + 1) and len(shortened.encode("utf-8")) <= MAX_STEM_BYTES
    multibyte = RecordKey("a" + "é" * 150).stem  # 301 bytes: the cut must not split a character
    assert len(multibyte.encode("utf-8")) <= MAX_STEM_BYTES and "\ufffd" not in multibyte


def test_short_id_cannot_take_a_shortened_stem() -> None:
    long_id = "x" * 300
    shortened = RecordKey(long_id).stem
    # `shortened` is itself a valid, short id; it must not be written to the same file as `long_id`
    assert RecordKey(shortened).stem != RecordKey(long_id).stem
