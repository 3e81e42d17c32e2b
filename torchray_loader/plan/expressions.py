"""``filter(expr="...")``: a Python-syntax predicate string as a ``pyarrow.compute`` expression.

Ray Data's ``Dataset.filter(expr="id > 3 and label == 'cat'")`` filters with Arrow, never calling
Python per row. The string is parsed with :mod:`ast` and translated node by node; only this syntax is
accepted (anything else is a ``ValueError`` naming it, and nothing is ever evaluated as Python):

* column names, and constants (numbers, strings, ``True``/``False``/``None``);
* comparisons ``== != < <= > >=`` (chains too: ``0 < x < 5``), ``in`` / ``not in`` a literal list,
  tuple or set, ``is None`` / ``is not None``;
* ``and``, ``or``, ``not``; arithmetic ``+ - * /`` and unary minus.

Rows where the expression is null (a comparison with a null value) are dropped, as by Arrow's filter;
``in`` treats null as a value (``None not in ["a"]`` is true, as in Python).

Example:
    >>> import pyarrow as pa
    >>> expr = parse_filter_expression("x > 1 and name != 'b'")
    >>> pa.table({"x": [1, 2, 3], "name": ["a", "b", "c"]}).filter(expr).to_pylist()
    [{'x': 3, 'name': 'c'}]
"""

from __future__ import annotations

import ast
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["parse_filter_expression", "ArrowFilter"]

_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ARITHMETIC = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}


def parse_filter_expression(text: str) -> pc.Expression:
    """The ``pyarrow.compute`` expression that ``text`` (Python syntax, see the module) denotes.

    Example:
        >>> str(parse_filter_expression("id in [1, 2]"))
        'is_in(id, {value_set=int64:[\\n  1,\\n  2\\n], null_matching_behavior=MATCH})'
    """
    if not isinstance(text, str):
        raise TypeError(f"expr must be a str, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expr {text!r} is not a valid expression: {exc.msg}") from exc
    return _translate(tree.body, text)


def _unsupported(node: ast.AST, text: str) -> ValueError:
    return ValueError(f"expr {text!r}: {ast.unparse(node)!r} ({type(node).__name__}) is not supported in a filter expression")


def _constant(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _constant(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    raise _unsupported(node, text)


def _translate(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Name):
        return pc.field(node.id)
    if isinstance(node, ast.Constant):
        return pc.scalar(_constant(node, text))
    if isinstance(node, ast.BoolOp):
        parts = [_translate(v, text) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return ~_translate(node.operand, text)
        if isinstance(node.op, ast.USub):
            return pc.negate(_translate(node.operand, text))
        raise _unsupported(node, text)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return getattr(pc, _ARITHMETIC[type(node.op)])(_translate(node.left, text), _translate(node.right, text))
    if isinstance(node, ast.Compare):
        terms = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(left, op, right, text))
            left = right
        out = terms[0]
        for t in terms[1:]:
            out = out & t
        return out
    raise _unsupported(node, text)


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST, text: str) -> Any:
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise _unsupported(right, text)
        member = _translate(left, text).isin(pa.array([_constant(e, text) for e in right.elts]))
        return ~member if isinstance(op, ast.NotIn) else member
    if isinstance(op, (ast.Is, ast.IsNot)):
        if not (isinstance(right, ast.Constant) and right.value is None):
            raise _unsupported(right, text)
        value = _translate(left, text)
        return value.is_null() if isinstance(op, ast.Is) else value.is_valid()
    compare = _COMPARE.get(type(op))
    if compare is None:
        raise _unsupported(left, text)
    return compare(_translate(left, text), _translate(right, text))


class ArrowFilter:
    """``map_batches`` body (``batch_format="pyarrow"``) keeping the rows where ``expr`` is true.

    Example:
        >>> ArrowFilter("x < 2")(pa.table({"x": [1, 2]})).to_pylist()
        [{'x': 1}]
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.expr = parse_filter_expression(text)

    def __call__(self, table: pa.Table) -> pa.Table:
        try:
            return table.filter(self.expr)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError) as exc:
            raise ValueError(f"filter expr {self.text!r} on columns {table.column_names}: {exc}") from exc

    def __repr__(self) -> str:
        return f"expr={self.text!r}"
