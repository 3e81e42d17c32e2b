"""``filter(expr=...)``: the accepted syntax matches a Python predicate row by row; nothing else is
accepted, and nothing is evaluated as Python."""

from __future__ import annotations

import pyarrow as pa
import pytest

import torchray_loader as rd
from torchray_loader.plan.expressions import parse_filter_expression

ROWS = [
    {"x": 1, "y": 2.5, "s": "a"},
    {"x": 4, "y": -1.0, "s": "b"},
    {"x": 7, "y": 0.0, "s": "c"},
    {"x": None, "y": 3.0, "s": None},
]

# (expression, the same predicate in Python, where a null operand makes the row drop)
CASES = [
    ("x > 3", lambda r: r["x"] is not None and r["x"] > 3),
    ("x >= 4 and s != 'c'", lambda r: r["x"] is not None and r["x"] >= 4 and r["s"] != "c"),
    ("x < 2 or y < 0", lambda r: (r["x"] is not None and r["x"] < 2) or r["y"] < 0),
    ("not x == 4", lambda r: r["x"] is not None and not r["x"] == 4),
    ("0 < x < 5", lambda r: r["x"] is not None and 0 < r["x"] < 5),
    ("s in ['a', 'c']", lambda r: r["s"] in ("a", "c")),
    ("s not in ('a',)", lambda r: r["s"] not in ("a",)),  # membership treats null as a value, as Python
    ("x is None", lambda r: r["x"] is None),
    ("x is not None and x * 2 - 1 > 6", lambda r: r["x"] is not None and r["x"] * 2 - 1 > 6),
    ("y / 2 == -0.5", lambda r: r["y"] / 2 == -0.5),
    ("x > -1 and -y < 1", lambda r: r["x"] is not None and r["x"] > -1 and -r["y"] < 1),
]


@pytest.mark.parametrize("text,predicate", CASES, ids=[c[0] for c in CASES])
def test_expression_keeps_the_rows_the_predicate_keeps(text, predicate):
    assert pa.Table.from_pylist(ROWS).filter(parse_filter_expression(text)).to_pylist() == [r for r in ROWS if predicate(r)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataset_filter_with_expr(num_workers):
    rd.DataContext.get_current().num_workers = num_workers  # the autouse fixture restores the context
    ds = rd.range(100, override_num_blocks=4).filter(expr="id >= 90 or id < 3")
    assert [r["id"] for r in ds.take_all()] == [0, 1, 2, *range(90, 100)]


@pytest.mark.parametrize(
    "text", ["__import__('os').system('true')", "x.y > 1", "x[0] > 1", "x ** 2 > 1", "lambda: 1", "x > [1]", "x is 1"]
)
def test_other_syntax_is_refused_by_name(text):
    with pytest.raises(ValueError, match="not supported in a filter expression"):
        parse_filter_expression(text)


def test_bad_filter_calls():
    with pytest.raises(ValueError, match="not a valid expression"):
        rd.range(3).filter(expr="x >")
    with pytest.raises(TypeError, match="exactly one of fn and expr"):
        rd.range(3).filter()
    with pytest.raises(TypeError, match="exactly one of fn and expr"):
        rd.range(3).filter(lambda r: True, expr="id > 1")
    with pytest.raises(ValueError, match="nope"):
        rd.range(3).filter(expr="nope > 1").take_all()
