"""Selecting metadata rows: `where=` as a query string (an allow-listed grammar) or a callable.

How it works:
- A query string is tokenised and parsed here, by a small recursive-descent parser that knows
  only: column names of the metadata, literals (numbers, quoted strings, True/False), the
  comparisons `== != < <= > >=` (a column on at least one side; chains such as
  `60 <= tempo_bpm < 120`), `in` / `not in` a `[...]` list, `and` / `or` / `not` (also
  `& | ~`), parentheses, and `column.str.contains|startswith|endswith('text')` (plain substring,
  no regex). It evaluates to a pandas boolean mask built from Series operations. Nothing is
  looked up in any Python namespace: `@name`, attribute access, calls and any other token are
  refused with a `QueryError` naming the token and its position. (pandas' own `query` resolves
  `@name` in the caller's globals and can run code; it is not used.)
- Every malformed query is a `QueryError`, never another exception: nesting (parentheses and
  `not`) is bounded by MAX_NESTING, so the recursive descent cannot exhaust the stack, and a
  number by MAX_NUMBER characters (Python refuses to convert integers of 4300+ digits).
- A callable `DataFrame → mask or rows` is the way to arbitrary logic (your own code, your own
  risk); its result is checked and aligned with the metadata.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LoaderError, QueryError

Where = str | Callable[[pd.DataFrame], Any] | None

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|&|\||~|\(|\)|\[|\]|,|\.|-)
""", re.VERBOSE)
_COMPARE = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
# `literal op column` is `column mirrored-op literal`.
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
# Levels of parentheses and `not`: each costs a few stack frames, and real queries use a few.
MAX_NESTING = 50
MAX_NUMBER = 50  # characters of one number literal
QUOTED = 200  # characters of a query an error quotes (its position names the place)
_STRING_METHODS = ("contains", "startswith", "endswith")
_KEYWORDS = {"and", "or", "not", "in", "True", "False"}


def _cut(text: str) -> str:
    """`text` quoted as an error quotes a query or a token: a long one (a generated list?)
    cut, with its length, so the message stays a line and not a page."""
    if len(text) <= QUOTED:
        return repr(text)
    return f"{text[:QUOTED]!r}... ({len(text):,} characters)"


def _where(text: str) -> str:
    return f"where={_cut(text)}"


def describe(where: Where) -> str:
    """`where` as a message quotes it."""
    if isinstance(where, str):
        return _where(where)
    return f"where={getattr(where, '__name__', 'a callable')}"


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of every token; anything the grammar lacks is refused here."""
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"{_where(text)}: {text[pos]!r} at position {pos} is not allowed. "
                             "A query may use column names, literals, comparisons, in/not in "
                             "[...], and/or/not and parentheses; use a callable for anything "
                             "else")
        if match.lastgroup != "space":
            out.append((match.lastgroup, match.group(), pos))
        pos = match.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    """Parses and evaluates in one pass: every rule returns a Series, a scalar or a list."""

    def __init__(self, text: str, frame: pd.DataFrame) -> None:
        self.text = text
        self.frame = frame
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def fail(self, message: str, at: int | None = None) -> QueryError:
        """The error `message`, naming the token at index `at` (default: the next one)."""
        kind, token, pos = self.tokens[self.i if at is None else at]
        got = "the end" if kind == "end" else f"{_cut(token)} at position {pos}"
        return QueryError(f"{_where(self.text)}: {message}, found {got}")

    @contextmanager
    def nested(self) -> Iterator[None]:
        """One more level of parentheses or `not`, refused past MAX_NESTING."""
        if self.depth >= MAX_NESTING:
            raise self.fail(f"more than {MAX_NESTING} levels of parentheses and not")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def peek(self, *texts: str) -> bool:
        kind, token, _ = self.tokens[self.i]
        return kind in ("name", "op") and token in texts

    def take(self, *texts: str) -> str:
        if not self.peek(*texts):
            raise self.fail(f"expected {' or '.join(repr(t) for t in texts)}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def parse(self) -> Any:
        value = self.either()
        if self.tokens[self.i][0] != "end":
            raise self.fail("expected and/or or the end of the query")
        return value

    def either(self) -> Any:
        value = self.both()
        while self.peek("or", "|"):
            self.i += 1
            value = _condition(value, self) | _condition(self.both(), self)
        return value

    def both(self) -> Any:
        value = self.negation()
        while self.peek("and", "&"):
            self.i += 1
            value = _condition(value, self) & _condition(self.negation(), self)
        return value

    def negation(self) -> Any:
        if self.peek("not", "~"):
            with self.nested():
                self.i += 1
                value = _condition(self.negation(), self)
            return not value if isinstance(value, bool) else ~value  # ~True is -2
        return self.comparison()

    def comparison(self) -> Any:
        left = self.atom()
        result = None
        while self.peek(*_COMPARE, "in", "not"):
            at = self.i
            op = self.take(*_COMPARE, "in", "not")
            if op == "not":
                self.take("in")
                op = "not in"
            right = self.atom()
            step = self.compare(left, op, right, at)
            result = step if result is None else result & step
            left = right
        return left if result is None else result

    def compare(self, left: Any, op: str, right: Any, at: int) -> pd.Series:
        """`left op right` (`op` is token `at`) with a column on one side: a literal on the
        left is mirrored (`60 < tempo_bpm` is `tempo_bpm > 60`)."""
        if op in ("in", "not in"):
            if not isinstance(left, pd.Series):
                raise self.fail(f"'{op}' needs a column on its left", at)
            if not isinstance(right, list):
                raise self.fail(f"'{op}' needs a [...] list of literals after it", at)
            mask = left.isin(right)
            return ~mask if op == "not in" else mask
        if isinstance(left, list) or isinstance(right, list):
            raise self.fail(f"a [...] list goes after 'in' or 'not in', not next to '{op}'", at)
        if not isinstance(left, pd.Series):
            if not isinstance(right, pd.Series):
                raise self.fail("a comparison needs a column on one side", at)
            left, op, right = right, _MIRROR[op], left
        return getattr(left, _COMPARE[op])(right)

    def atom(self) -> Any:
        kind, token, _ = self.tokens[self.i]
        if self.peek("("):
            with self.nested():
                self.i += 1
                value = self.either()
                self.take(")")
            return value
        if self.peek("["):
            return self.listing()
        if kind in ("number", "string") or self.peek("True", "False", "-"):
            return self.literal()
        if kind == "name" and token not in _KEYWORDS:
            self.i += 1
            if token not in self.frame.columns:
                names = [str(name) for name in self.frame.columns]
                close = difflib.get_close_matches(token, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise QueryError(f"{_where(self.text)}: unknown column {token!r}.{hint} "
                                 f"Columns: {', '.join(names)}")
            column = self.frame[token]
            return self.string_method(column) if self.peek(".") else column
        raise self.fail("expected a column, a literal, a [...] list or '('")

    def string_method(self, column: pd.Series) -> pd.Series:
        self.take(".")
        self.take("str")
        self.take(".")
        method = self.take(*_STRING_METHODS)
        self.take("(")
        needle = self.literal()
        self.take(")")
        if not isinstance(needle, str):
            raise self.fail(f".str.{method}() takes a quoted string")
        text = column.astype("string")
        if method == "contains":
            return text.str.contains(needle, regex=False).fillna(False).astype(bool)
        return getattr(text.str, method)(needle).fillna(False).astype(bool)

    def listing(self) -> list:
        self.take("[")
        items = []
        while not self.peek("]"):
            items.append(self.literal())
            if not self.peek("]"):
                self.take(",")
        self.take("]")
        return items

    def literal(self) -> Any:
        sign = -1 if self.peek("-") else 1
        if sign < 0:
            self.i += 1
        kind, token, _ = self.tokens[self.i]
        if kind == "number":
            if len(token) > MAX_NUMBER:
                raise self.fail(f"a number of more than {MAX_NUMBER} characters")
            self.i += 1
            return sign * (int(token) if token.isdigit() else float(token))
        if sign > 0 and kind == "string":
            try:
                value = ast.literal_eval(token)  # a string literal token only: nothing to run
            except (SyntaxError, ValueError) as exc:  # a bad escape, a NUL character
                reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
                raise self.fail(f"not a valid string literal ({reason}; escapes are Python's, "
                                "such as \\n or \\x41)") from None
            self.i += 1
            return value
        if sign > 0 and self.peek("True", "False"):
            self.i += 1
            return token == "True"
        raise self.fail("expected a literal (number, quoted string, True or False)")


def _condition(value: Any, parser: _Parser) -> Any:
    """A boolean Series or bool: what and/or/not combine."""
    if isinstance(value, bool) or (isinstance(value, pd.Series) and value.dtype == bool):
        return value
    raise parser.fail("and/or/not combine conditions (comparisons), not plain values")


def query_mask(frame: pd.DataFrame, text: str) -> np.ndarray:
    """The boolean mask of the rows matching query `text` (see the module docstring)."""
    try:
        value = _Parser(text, frame).parse()
    except QueryError:
        raise
    except (TypeError, ValueError) as exc:  # pandas: e.g. a number column < a string
        raise QueryError(f"{_where(text)}: {exc}. Compare each column with a value of its "
                         "type") from None
    if isinstance(value, bool):
        return np.full(len(frame), value)
    if isinstance(value, pd.Series) and value.dtype == bool:
        return value.to_numpy()
    raise QueryError(f"{_where(text)} is not a condition: compare a column with something "
                     "(e.g. \"tempo_bpm >= 120\")")


def select(frame: pd.DataFrame, where: Where) -> pd.DataFrame:
    """Rows matching `where`: a query string or a callable returning a mask/DataFrame."""
    if where is None:
        return frame
    if isinstance(where, str):
        return frame[query_mask(frame, where)]
    try:
        result = where(frame)
    except Exception as exc:  # the caller's own code: any failure means "fix where"
        raise LoaderError(
            f"where={where!r} failed on the metadata: {type(exc).__name__}: {exc}. Columns: "
            f"{', '.join(frame.columns)}") from exc
    if isinstance(result, pd.DataFrame):
        # By key, not by index label: a merge or reset_index renumbers the rows.
        if "key" not in result.columns:
            raise LoaderError("where= returned a DataFrame without the key column; return "
                              "the selected metadata rows (with key) or a boolean mask")
        return frame[frame["key"].isin(result["key"])]
    if isinstance(result, pd.Series) and not result.index.equals(frame.index):
        if not result.index.isin(frame.index).all() or result.index.has_duplicates:
            raise LoaderError("where= returned a boolean Series whose index is not the "
                              "metadata's; return a mask aligned with the metadata rows")
        result = result.reindex(frame.index, fill_value=False)
    mask = np.asarray(result)
    if mask.dtype != bool or mask.shape != (len(frame),):
        raise LoaderError(f"where= must return a boolean mask of {len(frame)} rows or a "
                          f"DataFrame of selected rows, not {type(result).__name__}")
    return frame[mask]
