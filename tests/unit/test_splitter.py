"""Tests of splitting Cedar text into located statements."""

from verdict.policy.splitter import split_statements


def test_statements_start_on_their_first_line() -> None:
    """Each statement reports the line of its first token, annotations included."""
    source = (
        '// header; not a policy\n\n@id("a")\npermit(principal, action, resource);\n\n'
        "forbid(principal, action, resource)\n  when { true };\n"
    )
    statements = split_statements(source)
    assert [s.line for s in statements] == [3, 6]
    assert statements[0].text.startswith('@id("a")')
    assert statements[1].text.endswith("};")


def test_semicolons_in_strings_and_comments_do_not_split() -> None:
    """A ``;`` inside a string literal or a comment is not a terminator."""
    source = 'permit(principal, action, resource) when { // x; y\n resource.n == "a;\\"b" };'
    statements = split_statements(source)
    assert len(statements) == 1
    assert statements[0].text == source


def test_trailing_text_without_semicolon_is_kept() -> None:
    """Unterminated trailing text becomes a statement so the parser can reject it."""
    statements = split_statements("permit(principal, action, resource);\n\npermit(principal")
    assert [s.line for s in statements] == [1, 3]
    assert statements[1].text == "permit(principal"


def test_lines_count_newlines_inside_strings() -> None:
    """Newlines inside string literals still advance the line count."""
    statements = split_statements(
        'permit(principal, action, resource) when { "a\nb" == "" };\n'
        "permit(principal, action, resource);"
    )
    assert [s.line for s in statements] == [1, 3]
