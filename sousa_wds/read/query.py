"""Selecting metadata rows: `where=` as a query string (an allow-listed grammar) or a callable.

How it works:
- A query string is tokenised and parsed here, by a small recursive-descent parser that knows
  only: column names of the metadata, literals (numbers, quoted strings, True/False), the
  comparisons `== != < <= > >=`, `in` / `not in` a `[...]` list, `and` / `or` / `not` (also
  `& | ~`), parentheses, and `column.str.contains|startswith|endswith('text')` (plain substring,
  no regex). It evaluates to a pandas boolean mask built from Series operations. Nothing is
  looked up in any Python namespace: `@name`, attribute access, calls and any other token are
  refused with a `QueryError` naming the token and its position. (pandas' own `query` resolves
  `@name` in the caller's globals and can run code; it is not used.)
- A callable `DataFrame → mask or rows` is the way to arbitrary logic (your own code, your own
  risk); its result is checked and aligned with the metadata.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
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
_STRING_METHODS = ("contains", "startswith", "endswith")
_KEYWORDS = {"and", "or", "not", "in", "True", "False"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of every token; anything the grammar lacks is refused here."""
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"where={text!r}: {text[pos]!r} at position {pos} is not allowed. "
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

    def fail(self, message: str) -> QueryError:
        kind, token, pos = self.tokens[self.i]
        got = "the end" if kind == "end" else f"{token!r} at position {pos}"
        return QueryError(f"where={self.text!r}: {message}, found {got}")

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
            self.i += 1
            return ~_condition(self.negation(), self)
        return self.comparison()

    def comparison(self) -> Any:
        left = self.atom()
        result = None
        while self.peek(*_COMPARE, "in", "not"):
            op = self.take(*_COMPARE, "in", "not")
            if op == "not":
                self.take("in")
                op = "not in"
            right = self.atom()
            if op in ("in", "not in"):
                if not isinstance(right, list):
                    raise self.fail(f"'{op}' needs a [...] list of literals after it")
                step = _series(left, self.frame).isin(right)
                step = ~step if op == "not in" else step
            else:
                step = getattr(_series(left, self.frame), _COMPARE[op])(right)
            result = step if result is None else result & step
            left = right
        return left if result is None else result

    def atom(self) -> Any:
        kind, token, _ = self.tokens[self.i]
        if self.peek("("):
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
                raise QueryError(f"where={self.text!r}: unknown column {token!r}. Columns: "
                                 f"{', '.join(map(str, self.frame.columns))}")
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
            self.i += 1
            return sign * ast.literal_eval(token)
        if sign > 0 and kind == "string":
            self.i += 1
            return ast.literal_eval(token)  # a string literal token only: nothing to run
        if sign > 0 and self.peek("True", "False"):
            self.i += 1
            return token == "True"
        raise self.fail("expected a literal (number, quoted string, True or False)")


def _series(value: Any, parser: _Parser) -> pd.Series:
    if not isinstance(value, pd.Series):
        raise parser.fail("a comparison needs a column on its left")
    return value


def _condition(value: Any, parser: _Parser) -> Any:
    """A boolean Series or bool: what and/or/not combine."""
    if isinstance(value, bool) or (isinstance(value, pd.Series) and value.dtype == bool):
        return value
    raise parser.fail("and/or/not combine conditions (comparisons), not plain values")


def query_mask(frame: pd.DataFrame, text: str) -> np.ndarray:
    """The boolean mask of the rows matching query `text` (see the module docstring)."""
    try:
        value = _Parser(text, frame).parse()
    except TypeError as exc:  # pandas: e.g. a number column compared with a string by <
        raise QueryError(f"where={text!r}: {exc}. Compare each column with a value of its "
                         "type") from None
    if isinstance(value, bool):
        return np.full(len(frame), value)
    if isinstance(value, pd.Series) and value.dtype == bool:
        return value.to_numpy()
    raise QueryError(f"where={text!r} is not a condition: compare a column with something "
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
