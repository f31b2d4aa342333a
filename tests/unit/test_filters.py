from criadapt.filters import matches_labels, resolve_id


def test_matches_labels_is_and_of_every_key() -> None:
    assert matches_labels({"a": "1", "b": "2"}, {"a": "1"})
    assert matches_labels({"a": "1"}, {})
    assert not matches_labels({"a": "1"}, {"a": "2"})
    assert not matches_labels({"a": "1"}, {"a": "1", "b": "2"})


def test_resolve_id_exact_or_unique_prefix() -> None:
    ids = ["abc123", "abd456", "xyz"]
    assert resolve_id("abc123", ids) == ["abc123"]
    assert resolve_id("abc", ids) == ["abc123"]
    assert resolve_id("ab", ids) == []  # ambiguous
    assert resolve_id("nope", ids) == []
