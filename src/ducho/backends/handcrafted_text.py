"""Handcrafted text features: TF-IDF fitted on the corpus, simple statistics, language and VADER sentiment.

Each output layer is a feature family; `output_layers` picks them (default: every family whose package is
installed). Every record gets one float32 vector per family. Texts are NFC-normalised first.

- `tfidf` (V,): scikit-learn `TfidfVectorizer` (smooth idf, L2 norm) fitted by `fit` on every text of the
  source, V = vocabulary size <= `max_features`. The vocabulary and idf weights are written as
  `tfidf_vocabulary.json` in every layer folder; `params.vocabulary_path` loads such a file instead of fitting,
  so a new corpus maps to the old columns. The default token pattern keeps runs of letters of every script
  with their combining marks (Greek, Cyrillic, Devanagari, CJK split by spaces, accents), single letters
  included; digits, `_` and punctuation separate tokens. Japanese or Chinese without spaces is one token per
  run: segment it before, or pass your own `token_pattern`.
  With `format: npy` or `matrix` each record is a dense float32 vector (16 KiB at the default V = 4096; a
  1M x 4096 matrix is 16 GB); `format: sparse` writes one scipy.sparse CSR `features.npz` whose size follows
  the non-zeros, which is what large corpora want.
- `stats` (10,): characters, words, mean_word_length, sentences, uppercase_fraction, digit_fraction,
  punctuation_fraction, type_token_ratio, exclamation_marks, question_marks (see `text_stats`).
- `language` (len(languages) + 2,): py3langid over its ~140 languages; one-hot over `params.languages`
  (default `LANGUAGES`, 20 codes) plus `other`, then the probability of the detected language. Texts
  without letters give zeros.
- `sentiment` (4,): VADER neg, neu, pos, compound (an English lexicon with rules; other languages score ~0).

params: max_features (4096), min_df (1), max_df (1.0), ngram_range ([1, 1]), lowercase (true),
sublinear_tf (false), token_pattern (letters of every script), vocabulary_path (none; absolute or relative to
the working directory), languages (`LANGUAGES`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..config.schema import TextModelSpec
from ..errors import ConfigError, DuchoError, bad_value
from .base import Layer

log = logging.getLogger("ducho")

VOCABULARY_FILE = "tfidf_vocabulary.json"
VOCABULARY_FORMAT = "ducho tfidf vocabulary 1"

FAMILIES = ("tfidf", "stats", "language", "sentiment")
PACKAGES = {  # family -> (module to import, distribution to install)
    "tfidf": ("sklearn", "scikit-learn"),
    "stats": (None, None),
    "language": ("py3langid", "py3langid==0.4.0"),
    "sentiment": ("vaderSentiment", "vaderSentiment==3.3.2"),
}
STATS = ("characters", "words", "mean_word_length", "sentences", "uppercase_fraction", "digit_fraction",
         "punctuation_fraction", "type_token_ratio", "exclamation_marks", "question_marks")
SENTIMENT = ("neg", "neu", "pos", "compound")
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "cs", "ru", "uk", "el", "tr", "ar", "he", "hi",
             "zh", "ja", "ko")

EXCLAMATION = "!¡！"
QUESTION = "?¿？؟"
_SENTENCE_END = re.compile(r"[.!?…؟।]+(?=\s|$)|[。！？]+")

TFIDF_DEFAULTS: dict[str, Any] = {"max_features": 4096, "min_df": 1, "max_df": 1.0, "ngram_range": [1, 1],
                                  "lowercase": True, "sublinear_tf": False, "token_pattern": None}
PARAMS = (*TFIDF_DEFAULTS, "vocabulary_path", "languages")


# ---------------------------------------------------------------- tokens


@functools.cache
def _marks_class() -> str:
    """A regex character class of every Unicode combining mark (category M*), as escaped ranges."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])

    def escape(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    return "[" + "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges) + "]"


@functools.cache
def letters_pattern() -> str:
    """The default TF-IDF token: a run of letters of any script and combining marks (no digits, no `_`)."""
    return rf"(?:[^\W\d_]|{_marks_class()})+"


@functools.cache
def _word_regex() -> re.Pattern[str]:
    """A word for `stats`: a run of letters, digits and combining marks."""
    return re.compile(rf"(?:[^\W_]|{_marks_class()})+")


# ---------------------------------------------------------------- params


def _fail(key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"params.{key}: {value!r} is not accepted; expected {expected}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_df(key: str, value: object) -> int | float:
    if _is_int(value) and value >= 1:  # type: ignore[operator]
        return int(value)  # type: ignore[arg-type]
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise _fail(key, value, "a document count (integer >= 1) or a fraction of documents (0.0 to 1.0)")


def _check_ngrams(value: object) -> list[int]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value) \
            and 1 <= value[0] <= value[1]:
        return [int(value[0]), int(value[1])]
    raise _fail("ngram_range", value, "[min_n, max_n] with 1 <= min_n <= max_n")


def _check_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(key, value, "true or false")


def _check_pattern(value: object) -> str:
    if value is None:
        return letters_pattern()
    if not isinstance(value, str) or not value:
        raise _fail("token_pattern", value, "a regular expression")
    try:
        re.compile(value)
    except re.error as error:
        raise _fail("token_pattern", value, f"a valid regular expression ({error})") from error
    return value


def tfidf_params(params: dict[str, Any]) -> dict[str, Any]:
    """The TF-IDF settings: defaults overridden by `params`, each value checked."""
    given = {**TFIDF_DEFAULTS, **{k: v for k, v in params.items() if k in TFIDF_DEFAULTS}}
    max_features = given["max_features"]
    if not (_is_int(max_features) and max_features >= 1):
        raise _fail("max_features", max_features, "a positive integer (the vocabulary size cap)")
    return {"max_features": int(max_features), "min_df": _check_df("min_df", given["min_df"]),
            "max_df": _check_df("max_df", given["max_df"]), "ngram_range": _check_ngrams(given["ngram_range"]),
            "lowercase": _check_bool("lowercase", given["lowercase"]),
            "sublinear_tf": _check_bool("sublinear_tf", given["sublinear_tf"]),
            "token_pattern": _check_pattern(given["token_pattern"])}


def _check_languages(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value) \
            and len(set(value)) == len(value):
        return tuple(value)
    raise _fail("languages", value, "a non-empty list of distinct language codes (e.g. [en, de])")


def _check_keys(params: dict[str, Any]) -> None:
    for key in params:
        if key not in PARAMS:
            raise bad_value("params", key, PARAMS, what="key")


def _installed(family: str) -> bool:
    module = PACKAGES[family][0]
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def parse_families(spec: TextModelSpec) -> tuple[Layer, ...]:
    """One layer per requested family (folder = family name); by default every family whose package imports."""
    if not spec.output_layers:
        missing = [f for f in FAMILIES if not _installed(f)]
        if missing:
            log.warning("handcrafted text: families %s left out (packages not installed: %s)", missing,
                        [PACKAGES[f][1] for f in missing])
        return tuple(Layer(f, f) for f in FAMILIES if f not in missing)
    for name in spec.output_layers:
        if name not in FAMILIES:
            raise bad_value("output_layers", name, FAMILIES, what="feature family")
        if not _installed(name):
            raise ConfigError(f"output_layers: feature family {name!r} needs the {PACKAGES[name][1]} package "
                              f"(pip install {PACKAGES[name][1]})")
    return tuple(Layer(name, name) for name in spec.output_layers)


def check_spec(spec: TextModelSpec) -> tuple[tuple[Layer, ...], dict[str, Any]]:
    """Families and TF-IDF settings of `spec`; ConfigError for an unknown key, family or value."""
    _check_keys(spec.params)
    layers = parse_families(spec)
    settings = tfidf_params(spec.params)
    if "languages" in spec.params:
        _check_languages(spec.params["languages"])
    path = spec.params.get("vocabulary_path")
    if path is not None and (not isinstance(path, str) or not Path(path).expanduser().is_file()):
        raise _fail("vocabulary_path", path, f"a {VOCABULARY_FILE} file written by an earlier run")
    return layers, settings


# ---------------------------------------------------------------- stats


def text_stats(text: str) -> np.ndarray:
    """`STATS` of one text: counts of characters (code points), words (runs of letters, digits, marks),
    sentences (non-empty pieces between . ! ? … ؟ । followed by a space or the end, or 。！？); mean word length;
    uppercase letters / letters; decimal digits / characters; punctuation (Unicode P*) / characters; distinct
    case-folded words / words; counts of ! ¡ ！ and of ? ¿ ？ ؟. Ratios of an empty denominator are 0."""
    words = _word_regex().findall(text)
    n_chars, n_words = len(text), len(words)
    letters = sum(c.isalpha() for c in text)
    sentences = sum(1 for piece in _SENTENCE_END.split(text) if _word_regex().search(piece))
    values = [
        n_chars,
        n_words,
        sum(map(len, words)) / n_words if n_words else 0.0,
        sentences,
        sum(c.isupper() for c in text) / letters if letters else 0.0,
        sum(c.isdecimal() for c in text) / n_chars if n_chars else 0.0,
        sum(unicodedata.category(c)[0] == "P" for c in text) / n_chars if n_chars else 0.0,
        len({w.casefold() for w in words}) / n_words if n_words else 0.0,
        sum(c in EXCLAMATION for c in text),
        sum(c in QUESTION for c in text),
    ]
    return np.asarray(values, dtype=np.float32)


# ---------------------------------------------------------------- tfidf


def _vectorizer(settings: dict[str, Any], vocabulary: dict[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(lowercase=settings["lowercase"], token_pattern=settings["token_pattern"],
                           ngram_range=tuple(settings["ngram_range"]), max_df=settings["max_df"],
                           min_df=settings["min_df"], max_features=settings["max_features"],
                           sublinear_tf=settings["sublinear_tf"], vocabulary=vocabulary, norm="l2", use_idf=True,
                           smooth_idf=True, dtype=np.float64)


def vocabulary_bytes(vectorizer: Any, settings: dict[str, Any], documents: int) -> bytes:
    """The artifact: settings, term -> column, idf per column (JSON, sorted keys, so a refit gives equal bytes)."""
    from sklearn import __version__ as sklearn_version

    content = {
        "format": VOCABULARY_FORMAT,
        "params": {**settings, "norm": "l2", "smooth_idf": True, "use_idf": True, "unicode_normalization": "NFC"},
        "documents": documents,
        "scikit_learn": sklearn_version,
        "vocabulary": {term: int(column) for term, column in vectorizer.vocabulary_.items()},
        "idf": [float(v) for v in vectorizer.idf_],
    }
    return (json.dumps(content, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8")


def load_vocabulary(path: Path, given: dict[str, Any]) -> tuple[Any, dict[str, Any], bytes]:
    """A fitted vectorizer from a saved vocabulary; settings given explicitly in params must match the file's."""
    raw = path.read_bytes()
    try:
        content = json.loads(raw.decode("utf-8"))
        vocabulary = {str(t): int(c) for t, c in content["vocabulary"].items()}
        idf = np.asarray(content["idf"], dtype=np.float64)
        settings = tfidf_params({k: content["params"][k] for k in TFIDF_DEFAULTS})
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as error:
        raise ConfigError(f"params.vocabulary_path: {path} is not a {VOCABULARY_FILE} ({error})") from error
    if sorted(vocabulary.values()) != list(range(len(vocabulary))) or len(idf) != len(vocabulary):
        raise ConfigError(f"params.vocabulary_path: {path}: columns are not 0..{len(vocabulary) - 1} with one idf each")
    for key, value in given.items():
        if key in TFIDF_DEFAULTS and tfidf_params({key: value})[key] != settings[key]:
            raise ConfigError(f"params.{key}: {value!r} conflicts with the saved vocabulary {path} "
                              f"({key}: {settings[key]!r}); leave it out or fit a new vocabulary")
    vectorizer = _vectorizer(settings, vocabulary)
    vectorizer.idf_ = idf
    return vectorizer, settings, raw


# ---------------------------------------------------------------- extractor


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


class HandcraftedText:
    """Feature families as layers; TF-IDF is fitted on the corpus (or loaded), the others need no fitting."""

    loader = None  # texts go straight to `prepare`

    def __init__(self, spec: TextModelSpec, device: str) -> None:
        self.spec = spec
        self.layers, self.settings = check_spec(spec)
        self.families = {layer.name for layer in self.layers}
        self.vectorizer: Any = None
        self.vocabulary: bytes | None = None
        self.documents: int | None = None
        self.path = spec.params.get("vocabulary_path")
        if "tfidf" in self.families and self.path:
            self.vectorizer, self.settings, self.vocabulary = load_vocabulary(Path(self.path).expanduser(),
                                                                              spec.params)
        self.languages = _check_languages(spec.params.get("languages", LANGUAGES))
        self.identifier = self._language_identifier() if "language" in self.families else None
        self.analyzer = self._sentiment_analyzer() if "sentiment" in self.families else None

    @staticmethod
    def check(spec: TextModelSpec) -> str:
        """Validate params and families without loading anything; where the 'model' comes from."""
        layers, _ = check_spec(spec)
        return f"handcrafted text features ({', '.join(layer.name for layer in layers)}; no model files)"

    def _language_identifier(self) -> Any:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        unknown = [code for code in self.languages if code not in identifier.labels]
        if unknown:
            raise bad_value("params.languages", unknown[0], identifier.labels, what="language code")
        return identifier

    @staticmethod
    def _sentiment_analyzer() -> Any:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def fit(self, payloads: Iterator[str]) -> None:
        """Fit the TF-IDF vocabulary on every text (deterministic); nothing to do without tfidf or when loaded."""
        if "tfidf" not in self.families or self.path:
            return
        counted = [0]

        def texts() -> Iterator[str]:
            for text in payloads:
                counted[0] += 1
                yield unicodedata.normalize("NFC", text)

        vectorizer = _vectorizer(self.settings)
        try:
            vectorizer.fit(texts())
        except ValueError as error:
            raise DuchoError(f"tfidf: cannot fit a vocabulary on {counted[0]} texts: {error}") from error
        self.vectorizer, self.documents = vectorizer, counted[0]
        self.vocabulary = vocabulary_bytes(vectorizer, self.settings, counted[0])

    def artifacts(self) -> dict[str, bytes]:
        return {VOCABULARY_FILE: self.vocabulary} if self.vocabulary is not None else {}

    def sort_key(self, payload: str) -> int:
        return 0  # every text's features are computed alone

    def dimensions(self) -> dict[str, int]:
        """Per family, the vector length (tfidf: the vocabulary size once fitted or loaded, else max_features)."""
        size = len(self.vectorizer.vocabulary_) if self.vectorizer is not None else self.settings["max_features"]
        return {"tfidf": size, "stats": len(STATS), "language": len(self.languages) + 2,
                "sentiment": len(SENTIMENT)}

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        dims = self.dimensions()
        return {layer.folder: (dims[layer.name],) for layer in self.layers}

    def prepare(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every family for the batch, as (n, d) float32 arrays (computed here, in the prefetch thread)."""
        texts = [unicodedata.normalize("NFC", t) for t in texts]
        compute = {"tfidf": self._tfidf, "stats": self._stats, "language": self._language,
                   "sentiment": self._sentiment}
        return {name: compute[name](texts) for name in sorted(self.families)}

    def forward(self, batch: dict[str, np.ndarray]) -> dict[str, Sequence[np.ndarray]]:
        return {layer.folder: list(batch[layer.name]) for layer in self.layers}

    def _tfidf(self, texts: list[str]) -> np.ndarray:
        if self.vectorizer is None:
            raise DuchoError("tfidf: the vocabulary is not fitted (call fit, or set params.vocabulary_path)")
        return self.vectorizer.transform(texts).toarray().astype(np.float32)

    def _stats(self, texts: list[str]) -> np.ndarray:
        return np.stack([text_stats(t) for t in texts])

    def _language(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.languages) + 2), dtype=np.float32)
        column = {code: i for i, code in enumerate(self.languages)}
        for row, text in enumerate(texts):
            if not any(c.isalpha() for c in text):
                continue
            code, confidence = self.identifier.classify(text)
            out[row, column.get(code, len(self.languages))] = 1.0
            out[row, -1] = confidence
        return out

    def _sentiment(self, texts: list[str]) -> np.ndarray:
        scores = [self.analyzer.polarity_scores(t) for t in texts]
        return np.asarray([[s[k] for k in SENTIMENT] for s in scores], dtype=np.float32).reshape(-1, len(SENTIMENT))

    def feature_names(self, terms: bool = True) -> dict[str, list[str]]:
        """Per family, the name of each position (tfidf, when `terms`: the terms in column order)."""
        names: dict[str, list[str]] = {"stats": list(STATS), "sentiment": list(SENTIMENT),
                                       "language": [*self.languages, "other", "confidence"]}
        if terms and self.vectorizer is not None:
            names["tfidf"] = list(self.vectorizer.get_feature_names_out())
        return names

    def describe(self) -> dict[str, Any]:
        dims = self.dimensions()
        names = self.feature_names(terms=False)
        families = {layer.folder: {"family": layer.name, "dimension": dims[layer.name],
                                   **({"features": names[layer.name]} if layer.name != "tfidf" else {})}
                    for layer in self.layers}
        described: dict[str, Any] = {
            "model": {"requested": self.spec.model_name, "origin": "handcrafted text features (no model files)"},
            "families": families,
            "params": dict(self.spec.params),
            "preprocessing": {"unicode_normalization": "NFC"},
            "feature_libraries": {d: _version(d) for d in ("scikit-learn", "scipy", "py3langid", "vaderSentiment")
                                  if _version(d)},
        }
        if "tfidf" in self.families:
            settings = {k: v for k, v in self.settings.items() if k != "token_pattern"}
            default = self.settings["token_pattern"] == letters_pattern()
            described["tfidf"] = {
                **settings, "token_pattern": "letters of every script" if default else self.settings["token_pattern"],
                "vocabulary_size": dims["tfidf"], "vocabulary_path": self.path, "fitted_on_texts": self.documents,
                "vocabulary_sha256": hashlib.sha256(self.vocabulary).hexdigest() if self.vocabulary else None,
                "output": "float32 vectors (format: sparse stores them as CSR)"}
        return described
