"""What `q` may say, parsed before any database sees it: words (all must occur in the transcript), "quoted phrases"
(words in this order, next to each other) and `prefix*` (words that begin so). Nothing else is syntax: `NEAR`, `AND`,
`OR`, `NOT`, `column:`, parentheses and other punctuation are ordinary text, so no query can reach the full-text
engines' own languages (FTS5's, PostgreSQL's tsquery); each term is handed to them as a quoted string or a bound
parameter of its own.

    terms = parse_query('budget "next quarter" approv*')   # [Term(("budget",)), Term(("next", "quarter")), ...]

Refused with `InvalidQuery` (a 400): more than MAX_QUERY_CHARS characters or MAX_TERMS terms, a control character,
an unbalanced quote, a prefix of fewer than MIN_PREFIX letters, or no word at all.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from whisper_common.errors import InvalidParameter

MAX_QUERY_CHARS = 1000
MAX_TERMS = 32
MIN_PREFIX = 3

WORD = re.compile(r"[^\W_]+")
"""A word: letters and digits, as both engines' tokenizers split text."""
_PREFIX = re.compile(r"([^\W_]+)\*+")


class InvalidQuery(InvalidParameter):
    code = "invalid_query"

    def __init__(self, message: str) -> None:
        super().__init__("q", message)


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]
    """One word, or a phrase's words in order."""
    prefix: bool = False
    """A single word that stands for every word beginning with it."""

    @property
    def text(self) -> str:
        return " ".join(self.words)


def parse_query(q: str) -> list[Term]:
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"'q' is at most {MAX_QUERY_CHARS} characters (got {len(q)})")
    for character in q:
        if unicodedata.category(character) in ("Cc", "Cs"):
            raise InvalidQuery(f"'q' holds a control character (U+{ord(character):04X})")
    pieces = q.split('"')
    if len(pieces) % 2 == 0:
        raise InvalidQuery("'q' has an unbalanced quote: a phrase is written \"between two quotes\"")
    terms: list[Term] = []
    for index, piece in enumerate(pieces):
        if index % 2 == 1:  # inside quotes: one phrase
            words = tuple(WORD.findall(piece))
            if words:
                terms.append(Term(words))
            continue
        for chunk in piece.split():
            terms.extend(_chunk_terms(chunk))
    if not terms:
        raise InvalidQuery("'q' holds no word to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise InvalidQuery(f"'q' has at most {MAX_TERMS} words or phrases (got {len(terms)})")
    return terms


def _chunk_terms(chunk: str) -> list[Term]:
    """A whitespace-separated piece: `word`, `prefix*`, or text whose words are joined by punctuation (`e-mail`,
    `9:30`), searched as a phrase, as the engines index it."""
    prefix = _PREFIX.fullmatch(chunk.strip("()[]{}.,;:!?'"))
    if prefix is not None:
        stem = prefix.group(1)
        if len(stem) < MIN_PREFIX:
            raise InvalidQuery(f"a prefix search needs at least {MIN_PREFIX} letters before '*' (got '{stem}*')")
        return [Term((stem.lower(),), prefix=True)]
    words = tuple(WORD.findall(chunk))
    return [Term(words)] if words else []
