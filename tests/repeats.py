"""How often a word or phrase follows itself in a text: the measure of a repetition loop (issue 22 allows four)."""
from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """Lower-case words; a run of punctuation ("...") counts as a word of its own, and so does a mark standing alone
    between spaces (" . . ."): a loop of dots is one. A mark on a word ("country.") is not a word."""
    tokens: list[str] = []
    for chunk in text.lower().split():
        inner = [token for token in re.findall(r"[\w']+|[^\w\s]+", chunk) if token.strip(".,!?;:") or len(token) > 1]
        tokens.extend(inner or [chunk])
    return tokens


def longest_repeat(text: str, longest_phrase: int = 10) -> tuple[int, str]:
    """(copies, phrase) of the phrase of up to `longest_phrase` words that follows itself most often in a row."""
    tokens = words(text)
    best = (1 if tokens else 0, tokens[0] if tokens else "")
    for size in range(1, longest_phrase + 1):
        for start in range(len(tokens) - size):
            phrase = tokens[start:start + size]
            copies = 1
            while tokens[start + copies * size:start + (copies + 1) * size] == phrase:
                copies += 1
            if copies > best[0]:
                best = (copies, " ".join(phrase))
    return best
