"""YAML with a key written twice is refused wherever jsonargparse reads it."""

from lightning_sdm.cli.repeated_keys import first_repeated_key


def test_a_repeated_key_is_found_at_any_depth_with_both_lines():
    assert first_repeated_key("a: 1\nb:\n  c: 2\n  d: [{e: 1, e: 2}]\n") == "'e' (lines 4 and 4)"
    assert first_repeated_key("a: 1\nb: 2\na: 3\n") == "'a' (lines 1 and 3)"


def test_distinct_keys_merges_and_text_that_is_not_yaml_pass():
    assert first_repeated_key("a: 1\nb:\n  a: 1\n") is None  # equal names in other mappings
    merged = "base: &base\n  lr: 1\n  wd: 0\nrun:\n  <<: *base\n  lr: 2\n"
    assert first_repeated_key(merged) is None  # overriding a merged key is what << is for
    assert first_repeated_key("a: [1, 2") is None  # its own loader reports this one
    assert first_repeated_key("") is None and first_repeated_key("just text") is None
