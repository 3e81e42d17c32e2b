"""read_json / write_json: JSON Lines and JSON arrays, round trip, bad lines."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

import torchray_loader as rd
from torchray_loader.errors import ReadError
from torchray_loader.io.errors import read_skips
from torchray_loader.io.write import write_blocks


def test_json_lines_and_arrays(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1, "y": "a"}\n\n{"x": 2, "y": "b"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"x": 3, "y": "c"}, {"x": 4, "y": "d"}], indent=2))
    (tmp_path / "c.json").write_text(json.dumps({"x": 5, "y": "e"}, indent=2))
    assert [r["x"] for r in rd.read_json(str(tmp_path)).take_all()] == [1, 2, 3, 4, 5]


def test_round_trip_with_tensors_as_nested_lists(tmp_path):
    t = pa.table({"id": [1, 2], "name": ["a", None], "v": [0.5, 1.5]})
    ds = rd.from_arrow(t).add_column("img", lambda b: np.arange(8, dtype=np.int64).reshape(2, 2, 2))
    ds.write_json(str(tmp_path))
    rows = rd.read_json(str(tmp_path)).take_all()
    assert [(r["id"], r["name"], r["v"]) for r in rows] == [(1, "a", 0.5), (2, None, 1.5)]
    np.testing.assert_array_equal(
        np.asarray([np.stack(r["img"]) for r in rows]), np.arange(8).reshape(2, 2, 2)
    )


def test_write_json_as_one_array(tmp_path):
    write_blocks([pa.table({"x": [1, 2]})], "json", str(tmp_path), lines=False)
    assert json.loads((tmp_path / "part-000000.json").read_text()) == [{"x": 1}, {"x": 2}]
    assert rd.read_json(str(tmp_path)).take_all() == [{"x": 1}, {"x": 2}]


def test_bad_line_names_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n{"x": 2\n{"x": 3}\n')
    with pytest.raises(ReadError, match=r"a\.jsonl: row 2: invalid JSON"):
        rd.read_json(str(tmp_path)).take_all()
    ds = rd.read_json(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert ds.take_all() == [{"x": 1}, {"x": 3}]
    assert [s.row for s in read_skips(ds)] == [2]


def test_bad_array_and_non_objects(tmp_path):
    (tmp_path / "a.json").write_text('[{"x": 1},\n {"x": ]')
    with pytest.raises(ReadError, match=r"a\.json: line 2: invalid JSON"):
        rd.read_json(str(tmp_path / "a.json")).take_all()
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ReadError, match=r"b\.json: row 1: expected a JSON object"):
        rd.read_json(str(tmp_path / "b.json")).take_all()
    (tmp_path / "c.jsonl").write_text('{"x": 1}\n{"x": "one"}\n')
    with pytest.raises(ReadError, match=r"c\.jsonl: values of one field have incompatible types"):
        rd.read_json(str(tmp_path / "c.jsonl")).take_all()


def test_bytes_cannot_be_written(tmp_path):
    with pytest.raises(TypeError, match=r"part-000000\.json: column 'b'.*no bytes type"):
        write_blocks([pa.table({"b": [b"\x00"]})], "json", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_nan_and_infinities_are_written_as_null(tmp_path):
    import numpy as np

    from torchray_loader.blocks import column_from_values

    block = pa.table({
        "f": [1.5, float("nan"), float("inf")],
        "l": [[1.0, float("-inf")], [], None],
        "t": column_from_values([np.array([np.nan, 1.0])] * 3),
    })
    write_blocks([block], "json", str(tmp_path))
    lines = (tmp_path / "part-000000.json").read_text().splitlines()
    assert lines[0] == '{"f":1.5,"l":[1.0,null],"t":[null,1.0]}'  # strict JSON, compact as Ray writes it
    assert [json.loads(line)["f"] for line in lines] == [1.5, None, None]
