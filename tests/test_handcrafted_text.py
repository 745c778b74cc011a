"""The handcrafted text backend: TF-IDF against scikit-learn and hand-computed numbers, the vocabulary artifact,
statistics, language, sentiment, errors, and a whole run with resume."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

import ducho
from conftest import write_tsv
from ducho.backends.handcrafted_text import (
    LANGUAGES,
    STATS,
    VOCABULARY_FILE,
    HandcraftedText,
    letters_pattern,
    text_stats,
)
from ducho.config.schema import TextModelSpec
from ducho.errors import ConfigError

CORPUS_A = ["Great running shoe, light and great.", "Heavy tent; survives rain.", "A light tent for rain and sun."]
CORPUS_B = ["A great tent!", "Shoe for rain, and new words unseen.", "nothing known here"]


def build(layers: list[str] | None = None, **params: object) -> HandcraftedText:
    return HandcraftedText(TextModelSpec(model_name="tfidf", backend="handcrafted", output_layers=layers or [],
                                         params=params), "cpu")


def extract(extractor: HandcraftedText, texts: list[str]) -> dict[str, np.ndarray]:
    return {folder: np.stack(rows) for folder, rows in extractor.forward(extractor.prepare(texts)).items()}


def fitted(texts: list[str], layers: list[str] | None = None, **params: object) -> HandcraftedText:
    extractor = build(layers or ["tfidf"], **params)
    extractor.fit(iter(texts))
    return extractor


def direct(texts: list[str], **kwargs: object) -> TfidfVectorizer:
    return TfidfVectorizer(**{"token_pattern": letters_pattern(), "max_features": 4096, **kwargs}).fit(texts)


# ---------------------------------------------------------------- tfidf


def test_two_documents_match_hand_computed_idf_and_sklearn() -> None:
    texts = ["apple banana apple", "banana cherry"]
    extractor = fitted(texts)
    ours = extract(extractor, texts)["tfidf"]
    # smooth idf: ln((1 + n) / (1 + df)) + 1 with n = 2; apple, cherry in 1 document, banana in both
    rare, common = math.log(3 / 2) + 1, 1.0
    first = np.array([2 * rare, common, 0.0]) / math.hypot(2 * rare, common)
    second = np.array([0.0, common, rare]) / math.hypot(common, rare)
    assert extractor.feature_names()["tfidf"] == ["apple", "banana", "cherry"]
    assert ours.dtype == np.float32 and ours.shape == (2, 3)
    np.testing.assert_allclose(ours, np.stack([first, second]), rtol=1e-6)
    reference = TfidfVectorizer().fit_transform(texts).toarray()  # sklearn's own defaults agree on ASCII words
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert json.loads(extractor.artifacts()[VOCABULARY_FILE])["idf"] == pytest.approx([rare, common, rare])


def test_settings_are_passed_to_the_vectorizer() -> None:
    settings = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2, "lowercase": False}
    extractor = fitted(CORPUS_A, **settings)
    reference = direct(CORPUS_A, ngram_range=(1, 2), sublinear_tf=True, min_df=2, lowercase=False)
    assert extractor.feature_names()["tfidf"] == list(reference.get_feature_names_out())
    assert "light" in extractor.feature_names()["tfidf"] and "Great" not in extractor.feature_names()["tfidf"]
    np.testing.assert_allclose(extract(extractor, CORPUS_B)["tfidf"],
                               reference.transform(CORPUS_B).toarray(), rtol=1e-6, atol=1e-7)


def test_max_features_caps_the_vocabulary_and_sets_the_shape() -> None:
    extractor = build(["tfidf"], max_features=3)
    assert extractor.layer_shapes() == {"tfidf": (3,)}  # before fit: the cap
    extractor.fit(iter(CORPUS_A))
    assert extractor.feature_names()["tfidf"] == list(direct(CORPUS_A, max_features=3).get_feature_names_out())
    assert extract(extractor, CORPUS_B)["tfidf"].shape == (3, 3)
    small = fitted(["one two", "two three"])
    assert small.layer_shapes() == {"tfidf": (3,)}  # after fit: the vocabulary size


def test_letters_of_every_script_are_terms() -> None:
    texts = ["Ελληνικά: πολύ καλό βιβλίο.", "日本語 の レビュー です", "Caffè perfetto, crème brûlée",
             "cafe\u0301 क्या हाल है", "route 66 and snake_case"]
    extractor = fitted(texts)
    terms = extractor.feature_names()["tfidf"]
    for term in ("ελληνικά", "βιβλίο", "日本語", "の", "レビュー", "caffè", "crème", "brûlée", "café", "क्या", "हाल"):
        assert term in terms, term
    assert "66" not in terms and {"snake", "case"} <= set(terms)  # digits and `_` separate tokens
    normalised = [unicodedata.normalize("NFC", t) for t in texts]
    reference = direct(normalised)
    assert terms == list(reference.get_feature_names_out())
    np.testing.assert_allclose(extract(extractor, texts)["tfidf"], reference.transform(normalised).toarray(),
                               rtol=1e-6)


def test_vocabulary_round_trip_maps_a_new_corpus_to_the_same_columns(tmp_path: Path) -> None:
    first = fitted(CORPUS_A, sublinear_tf=True)
    saved = tmp_path / VOCABULARY_FILE
    saved.write_bytes(first.artifacts()[VOCABULARY_FILE])

    def untouched() -> Iterator[str]:
        raise AssertionError("fit must not read texts when a vocabulary is loaded")
        yield ""

    loaded = build(["tfidf"], vocabulary_path=str(saved))
    loaded.fit(untouched())
    reference = direct(CORPUS_A, sublinear_tf=True)
    assert loaded.feature_names()["tfidf"] == list(reference.get_feature_names_out())
    ours = extract(loaded, CORPUS_B)["tfidf"]
    np.testing.assert_allclose(ours, reference.transform(CORPUS_B).toarray(), rtol=1e-6)
    np.testing.assert_array_equal(ours, extract(first, CORPUS_B)["tfidf"])
    assert not ours[2].any()  # no known term
    assert loaded.artifacts()[VOCABULARY_FILE] == saved.read_bytes()
    assert loaded.layer_shapes() == {"tfidf": (len(reference.vocabulary_),)}


def test_refit_is_deterministic() -> None:
    texts = CORPUS_A + CORPUS_B
    one, two = fitted(texts, max_features=5), fitted(texts, max_features=5)
    assert one.artifacts()[VOCABULARY_FILE] == two.artifacts()[VOCABULARY_FILE]
    assert extract(one, texts)["tfidf"].tobytes() == extract(two, texts)["tfidf"].tobytes()


def test_unfitted_tfidf_fails_clearly() -> None:
    with pytest.raises(ducho.errors.DuchoError, match="not fitted"):
        build(["tfidf"]).prepare(["text"])


def test_fit_without_any_term_fails_clearly() -> None:
    with pytest.raises(ducho.errors.DuchoError, match="cannot fit a vocabulary on 2 texts"):
        build(["tfidf"]).fit(iter(["123", "!!"]))


# ---------------------------------------------------------------- stats


def test_stats_of_a_known_sentence() -> None:
    values = dict(zip(STATS, text_stats("Hello World! Is it 2024? Yes, yes.").tolist()))
    expected = {"characters": 34, "words": 7, "mean_word_length": 24 / 7, "sentences": 3, "uppercase_fraction": 4 / 20,
                "digit_fraction": 4 / 34, "punctuation_fraction": 4 / 34, "type_token_ratio": 6 / 7,
                "exclamation_marks": 1, "question_marks": 1}
    assert values == pytest.approx(expected)


def test_stats_edge_cases() -> None:
    assert not text_stats("").any()
    assert text_stats("Rated 3.5 stars")[STATS.index("sentences")] == 1  # a decimal point ends no sentence
    japanese = text_stats("良い本です。また読みたい！")
    assert japanese[STATS.index("sentences")] == 2 and japanese[STATS.index("exclamation_marks")] == 1
    stats = extract(build(["stats"]), ["Hello World! Is it 2024? Yes, yes.", ""])["stats"]
    assert stats.shape == (2, 10) and stats.dtype == np.float32 and stats[0, 0] == 34


# ---------------------------------------------------------------- language and sentiment


def test_language_one_hot_and_confidence() -> None:
    extractor = build(["language"])
    texts = ["Ελληνικά: πολύ καλό βιβλίο για παιδιά.", "This is a very good book for children, they love it.", "123 !"]
    out = extract(extractor, texts)["language"]
    assert out.shape == (3, len(LANGUAGES) + 2) and extractor.layer_shapes() == {"language": (22,)}
    assert out[0, LANGUAGES.index("el")] == 1 and out[1, LANGUAGES.index("en")] == 1
    assert out[:2, :-1].sum() == 2 and 0.5 < out[0, -1] <= 1.0
    assert not out[2].any()  # no letters: no language
    only_german = extract(build(["language"], languages=["de"]), texts[:1])["language"]
    assert only_german[0].tolist()[:2] == [0.0, 1.0]  # Greek falls in `other`


def test_sentiment_matches_vader() -> None:
    import vaderSentiment.vaderSentiment as vader
    texts = ["I love this, it is great!", "Terrible. Broke after a day.", ""]
    out = extract(build(["sentiment"]), texts)["sentiment"]
    expected = [[s[k] for k in ("neg", "neu", "pos", "compound")]
                for s in map(vader.SentimentIntensityAnalyzer().polarity_scores, texts)]
    np.testing.assert_allclose(out, np.asarray(expected, dtype=np.float32))
    assert out[0, 3] > 0.5 and out[1, 3] < 0


def test_default_families_and_describe() -> None:
    extractor = build()
    extractor.fit(iter(CORPUS_A))
    assert [layer.folder for layer in extractor.layers] == ["tfidf", "stats", "language", "sentiment"]
    described = extractor.describe()
    assert {k: v["dimension"] for k, v in described["families"].items()} == {
        "tfidf": len(direct(CORPUS_A).vocabulary_), "stats": 10, "language": 22, "sentiment": 4}
    assert described["tfidf"]["fitted_on_texts"] == 3 and described["feature_libraries"]["scikit-learn"]
    json.dumps(described)  # fits in the manifest


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("layers", "params", "message"), [
    (["tfidf"], {"max_feature": 10}, r"params: key 'max_feature' is not accepted; .*did you mean 'max_features'"),
    (["tfid"], {}, r"output_layers: feature family 'tfid' is not accepted; accepted: tfidf, stats, language, "
                   r"sentiment \(did you mean 'tfidf'\?\)"),
    (["tfidf"], {"max_features": 0}, r"params.max_features: 0 is not accepted"),
    (["tfidf"], {"ngram_range": [2, 1]}, r"params.ngram_range"),
    (["tfidf"], {"min_df": True}, r"params.min_df"),
    (["tfidf"], {"max_df": 1.5}, r"params.max_df"),
    (["tfidf"], {"lowercase": "yes"}, r"params.lowercase"),
    (["tfidf"], {"token_pattern": "(unclosed"}, r"params.token_pattern"),
    (["tfidf"], {"vocabulary_path": "/nonexistent/tfidf_vocabulary.json"}, r"params.vocabulary_path"),
    (["language"], {"languages": []}, r"params.languages"),
])
def test_bad_settings_are_config_errors(layers: list[str], params: dict, message: str) -> None:
    spec = TextModelSpec(model_name="tfidf", output_layers=layers, params=params)
    with pytest.raises(ConfigError, match=message):
        HandcraftedText.check(spec)
    with pytest.raises(ConfigError, match=message):
        HandcraftedText(spec, "cpu")


def test_unknown_language_code() -> None:
    with pytest.raises(ConfigError, match="params.languages: language code 'english' is not accepted"):
        build(["language"], languages=["en", "english"])


def test_saved_vocabulary_conflicts_and_corruption(tmp_path: Path) -> None:
    saved = tmp_path / VOCABULARY_FILE
    saved.write_bytes(fitted(CORPUS_A, max_features=5).artifacts()[VOCABULARY_FILE])
    with pytest.raises(ConfigError, match="params.max_features: 10 conflicts with the saved vocabulary"):
        build(["tfidf"], vocabulary_path=str(saved), max_features=10)
    assert build(["tfidf"], vocabulary_path=str(saved), max_features=5).layer_shapes() == {"tfidf": (5,)}
    broken = tmp_path / "broken.json"
    broken.write_text('{"vocabulary": {"a": 0}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a tfidf_vocabulary.json"):
        build(["tfidf"], vocabulary_path=str(broken))


# ---------------------------------------------------------------- a whole run


ITEMS = ["Light running shoe for long distances.", "Espresso machine with a steam wand, great crema!",
         "Caffè perfetto: crema densa e aroma intenso.", "Tent for two, survives heavy rain?",
         "Ελληνικά: πολύ καλό βιβλίο για παιδιά."]


def items_config(root: Path, **source: object) -> dict:
    write_tsv(root / "items.tsv", ["item_id", "description"], [[f"i{n}", t] for n, t in enumerate(ITEMS)])
    model = {"model_name": "tfidf", "backend": "handcrafted", "output_layers": ["tfidf", "stats"]}
    return {"dataset_path": str(root), "device": "cpu",
            "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [model], **source}}}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def test_run_writes_features_and_vocabulary_and_resumes_identically(tmp_path: Path) -> None:
    config = items_config(tmp_path)
    result = ducho.run(config, progress=False)
    out = result.jobs[0].output_dir
    reference = direct(ITEMS)
    size = len(reference.vocabulary_)
    for folder in ("tfidf", "stats"):
        assert sorted(p.name for p in (out / folder).glob("*.npy")) == [f"i{n}.npy" for n in range(len(ITEMS))]
        assert json.loads((out / folder / VOCABULARY_FILE).read_bytes())["vocabulary"] == {
            term: int(column) for term, column in reference.vocabulary_.items()}
        manifest = json.loads((out / folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["status"] == "complete" and manifest["count"] == len(ITEMS)
    tfidf = np.stack([np.load(out / "tfidf" / f"i{n}.npy") for n in range(len(ITEMS))])
    assert tfidf.shape == (len(ITEMS), size) and tfidf.dtype == np.float32
    np.testing.assert_allclose(tfidf, reference.transform(ITEMS).toarray(), rtol=1e-6)
    assert np.load(out / "stats" / "i0.npy").shape == (10,)
    assert result.jobs[0].counts == {"tfidf": len(ITEMS), "stats": len(ITEMS)}

    before = snapshot(out)
    ducho.run(config, progress=False)  # a finished run: nothing recomputed, the artifact rewritten equal
    assert snapshot(out) == before
    for folder in ("tfidf", "stats"):  # an interrupted run: a record missing, the manifest still running
        (out / folder / "i3.npy").unlink()
        manifest = json.loads((out / folder / "manifest.json").read_text(encoding="utf-8"))
        (out / folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}), encoding="utf-8")
    resumed = ducho.run(config, progress=False)
    assert resumed.jobs[0].extracted == len(ITEMS)  # the chunk was refitted and extracted again
    assert snapshot(out) == before


def test_run_matrix_format(tmp_path: Path) -> None:
    result = ducho.run(items_config(tmp_path, format="matrix"), progress=False)
    out = result.jobs[0].output_dir
    features = np.load(out / "tfidf" / "features.npy")
    assert features.shape == (len(ITEMS), len(direct(ITEMS).vocabulary_)) and features.dtype == np.float32
    assert (out / "tfidf" / "ids.tsv").read_text(encoding="utf-8").split() == ["item"] + [f"i{n}" for n in range(5)]
    assert np.load(out / "stats" / "features.npy").shape == (len(ITEMS), 10)
    assert (out / "stats" / VOCABULARY_FILE).is_file()


def test_run_sparse_format_is_the_same_matrix_in_csr(tmp_path: Path) -> None:
    from scipy import sparse

    result = ducho.run(items_config(tmp_path, format="sparse"), progress=False)
    out = result.jobs[0].output_dir / "tfidf"
    matrix = sparse.load_npz(out / "features.npz")
    assert sparse.issparse(matrix) and matrix.dtype == np.float32
    expected = direct(ITEMS).transform(ITEMS)
    assert matrix.nnz == expected.nnz  # only the non-zeros are stored
    np.testing.assert_allclose(matrix.toarray(), expected.toarray(), rtol=1e-6)
    assert (out / "ids.tsv").read_text(encoding="utf-8").split() == ["item"] + [f"i{n}" for n in range(5)]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and "scipy.sparse CSR" in manifest["layout"]
    again = ducho.run(items_config(tmp_path, format="sparse"), progress=False)
    assert again.jobs[0].extracted == 0 and sparse.load_npz(out / "features.npz").nnz == expected.nnz
