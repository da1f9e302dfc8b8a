"""What `q` may say: words, "phrases", prefix*; FTS syntax (NEAR, AND/OR/NOT, column filters, parentheses, stars
elsewhere) is ordinary text; what cannot be searched is an InvalidQuery (a 400 named `invalid_query`)."""
from __future__ import annotations

import pytest

from whisper_common.transcripts.query import MAX_QUERY_CHARS, MAX_TERMS, InvalidQuery, Term, parse_query


def test_words_phrases_and_prefixes() -> None:
    assert parse_query('budget "next quarter" approv*') == [
        Term(("budget",)), Term(("next", "quarter")), Term(("approv",), prefix=True)]
    assert parse_query("e-mail 9:30") == [Term(("e", "mail")), Term(("9", "30"))]  # as the tokenizers split them
    assert parse_query("Größe café") == [Term(("Größe",)), Term(("café",))]


@pytest.mark.parametrize(("q", "terms"), [
    ("fellow NEAR americans", [("fellow",), ("NEAR",), ("americans",)]),
    ("NEAR(fellow americans, 3)", [("NEAR", "fellow"), ("americans",), ("3",)]),
    ("ask OR country NOT you", [("ask",), ("OR",), ("country",), ("NOT",), ("you",)]),
    ("tags : ow7465616d2d62", [("tags",), ("ow7465616d2d62",)]),
    ("{text tags}: country", [("text",), ("tags",), ("country",)]),
    ("(country", [("country",)]),
    ("country))", [("country",)]),
    ("* country *", [("country",)]),
    ("coun*try", [("coun", "try")]),
    ("^country", [("country",)]),
    ('"" country', [("country",)]),
])
def test_fts_syntax_is_text(q: str, terms: list[tuple[str, ...]]) -> None:
    assert [term.words for term in parse_query(q)] == terms


@pytest.mark.parametrize(("q", "message"), [
    ('"ask not', "unbalanced quote"),
    ('ask "not" "what', "unbalanced quote"),
    ("co*", "at least 3 letters"),
    ("*", "no word"),
    ("((( )))", "no word"),
    ("___", "no word"),
    ("country\x00", "control character"),
    ("country\nask", "control character"),
    ("\x1b[31m", "control character"),
    ("a" * (MAX_QUERY_CHARS + 1), f"at most {MAX_QUERY_CHARS} characters"),
    (" ".join(["word"] * (MAX_TERMS + 1)), f"at most {MAX_TERMS} words"),
])
def test_what_cannot_be_searched_is_a_400(q: str, message: str) -> None:
    with pytest.raises(InvalidQuery) as refused:
        parse_query(q)
    assert refused.value.status_code == 400 and refused.value.param == "q" and refused.value.code == "invalid_query"
    assert message in refused.value.message
