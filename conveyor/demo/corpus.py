"""The demo's corpus: docstrings of standard-library modules, and questions with known answers.

Thousands of real documents, available offline. The `examples.ingest` agent indexes them and
the demo asks, for a sample of them, the first sentence of the docstring: the run's answer is
correct when its top source is the document the question was taken from.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from dataclasses import dataclass

MODULES = (
    "json", "os", "re", "pathlib", "collections", "itertools", "functools",
    "datetime", "subprocess", "threading", "asyncio", "logging", "argparse",
)  # fmt: skip
MORE_MODULES = (
    "email", "http.client", "urllib.parse", "decimal", "fractions", "statistics", "random",
    "string", "textwrap", "difflib", "csv", "sqlite3", "zipfile", "tarfile", "shutil", "tempfile",
    "socket", "selectors", "heapq", "bisect", "enum", "dataclasses", "typing", "inspect",
    "contextlib", "abc", "operator", "unittest", "doctest", "pprint", "calendar", "time",
    "uuid", "hashlib", "hmac", "secrets", "base64", "struct", "codecs", "io", "gzip", "bz2",
)  # fmt: skip
MAX_DOC_CHARS = 2000
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Question:
    source: str
    """The id of the document the question was taken from."""
    text: str


def docstrings(modules: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(qualified name, first paragraph) of the public objects of the given stdlib modules."""
    found: dict[str, str] = {}
    for module_name in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
            members = inspect.getmembers(module)
        for attr, value in [(module_name, module), *members]:
            doc = inspect.getdoc(value) if not attr.startswith("_") else None
            name = attr if attr == module_name else f"{module_name}.{attr}"
            if doc and str(getattr(value, "__module__", module_name)).startswith(module_name):
                found.setdefault(name, " ".join(doc.split("\n\n")[0].split())[:MAX_DOC_CHARS])
    return sorted(found.items())


def first_sentence(text: str) -> str:
    return _SENTENCE.split(text.strip(), maxsplit=1)[0]


def questions(corpus: list[tuple[str, str]], count: int) -> list[Question]:
    """Up to `count` questions, evenly spread over the corpus, each with one known source.

    A question is a document's first sentence, kept only when it has at least six words and
    no other document starts with the same sentence (otherwise its source would be ambiguous).
    """
    by_sentence: dict[str, list[str]] = {}
    for name, doc in corpus:
        by_sentence.setdefault(first_sentence(doc).lower(), []).append(name)
    candidates = [
        Question(source=name, text=first_sentence(doc))
        for name, doc in corpus
        if len(first_sentence(doc).split()) >= 6
        and len(by_sentence[first_sentence(doc).lower()]) == 1
    ]
    if len(candidates) <= count:
        return candidates
    step = len(candidates) / count
    return [candidates[int(i * step)] for i in range(count)]
