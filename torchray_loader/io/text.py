"""``read_text``: one row per line of each file, in column ``text``.

Lines are split as ``str.splitlines`` splits them (``\\n``, ``\\r\\n``, a lone ``\\r``...), as in Ray;
blank lines are dropped unless ``drop_empty_lines=False``, as in Ray. A UTF-8 byte order mark at the
start of a file is not part of its first line (Ray keeps it). Compressed files (``.gz``, ``.bz2``,
...) are decompressed by extension. A line that does not decode in ``encoding`` is an error naming
the file and the line (or, under the skip policy, a skipped row).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("hello\\n\\nworld\\n")
    >>> [t.column("text").to_pylist() for task in plan_text(str(d)) for t in task()]
    [['hello', 'world']]
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, open_input, plan_read, read_input_bytes
from .read_task import ReadTask

__all__ = ["plan_text", "read_text_unit", "split_lines", "line_feed_pieces"]

#: Encodings (``codecs`` names) in which every ``0x0A`` byte is a line feed, so a byte stream can be
#: cut after any of them without splitting a character.
_LINE_FEED_SAFE = frozenset({"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"})


def split_lines(text: str, drop_empty_lines: bool) -> list[str]:
    """``text`` cut into lines as ``str.splitlines`` cuts it (as Ray does: ``\\n``, ``\\r\\n``, a lone
    ``\\r`` and the other Unicode line boundaries), without line ends; no last empty line for a final
    newline.

    Example:
        >>> split_lines("a\\r\\n\\nb\\rc\\n", drop_empty_lines=False)
        ['a', '', 'b', 'c']
    """
    lines = text.splitlines()
    if drop_empty_lines:
        lines = [line for line in lines if line.strip() != ""]
    return lines


def line_feed_pieces(stream: Any, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """``stream``'s bytes in consecutive pieces of about ``chunk_bytes`` that end just after a line
    end (a line feed; else a carriage return that no line feed follows; the last piece: where the
    stream ends), each with the 1-based number (counted in line feeds) of its first line.

    Joined, the pieces are the stream's bytes; a ``\\r\\n`` pair is never split; a piece is copied
    once however long its lines are.

    Example:
        >>> import io
        >>> list(line_feed_pieces(io.BytesIO(b"ab\\ncd\\nef"), 4))
        [(b'ab\\n', 1), (b'cd\\n', 2), (b'ef', 3)]
    """
    held: list[bytes] = []  # the bytes after the last cut
    line = 1
    while block := stream.read(chunk_bytes):
        # After the last LF, else after the last CR that is not the block's last byte (so no LF follows it).
        cut = block.rfind(b"\n") + 1 or block.rfind(b"\r", 0, len(block) - 1) + 1
        if not cut:
            held.append(block)
            continue
        piece = b"".join([*held, block[:cut]])
        held = [block[cut:]] if cut < len(block) else []
        yield piece, line
        line += piece.count(b"\n")
    if held:
        yield b"".join(held), line


def _decode_lines(
    data: bytes,
    encoding: str,
    drop_empty_lines: bool,
    shown: str,
    policy: ReadErrorPolicy,
    first_line: int = 1,
    named: str | None = None,
) -> list[str]:
    """``data`` decoded and cut into lines; ``first_line``: the file's line number of its first
    line; ``named``: the encoding as the caller named it (errors say so), if not ``encoding``."""
    named = named or encoding
    try:
        return split_lines(data.decode(encoding), drop_empty_lines)
    except UnicodeDecodeError as exc:
        first_bad = first_line + data.count(b"\n", 0, exc.start)
        if policy.mode == "raise":
            policy.bad_row(shown, first_bad, f"cannot decode as {named}: {exc.reason}")
    # Skip mode: decode line by line, dropping (and counting) only the lines that fail. A line keeps
    # its line feed, so its other line boundaries cut it as they cut the whole text.
    out: list[str] = []
    raw_lines = [raw + b"\n" for raw in data.split(b"\n")]
    raw_lines[-1] = raw_lines[-1][:-1]  # the text after the last line feed has none
    for lineno, raw in enumerate(raw_lines, start=first_line):
        try:
            out.extend(split_lines(raw.decode(encoding), drop_empty_lines))
        except UnicodeDecodeError as exc:
            policy.bad_row(shown, lineno, f"cannot decode as {named}: {exc.reason}")
    return out


def read_text_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    compression: str | None = "infer",
) -> Iterator[pa.Table]:
    """Reader for one file: tables with one string row per line (a file ``options`` streams, in an
    ASCII-compatible encoding: a table per chunk of lines).

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_text("x\\n\\ny\\n")
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_text_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'text': ['x', 'y']}]
    """
    codec = codecs.lookup(encoding).name
    strip_bom = codec in ("utf-8", "utf-8-sig")
    # The BOM is taken off the file's start; "utf-8-sig" would strip one at every piece or line.
    decoding = "utf-8" if strip_bom else encoding
    if options.streams(unit.file) and codec in _LINE_FEED_SAFE:
        yielded = False
        with open_input(fs, unit.file.path, compression=compression) as stream:
            # The BOM check is for the first piece only: a lone-CR file's later pieces start on line 1 too.
            for n, (piece, first_line) in enumerate(line_feed_pieces(stream, options.stream_chunk_bytes)):
                if n == 0 and strip_bom and piece.startswith(codecs.BOM_UTF8):
                    piece = piece[len(codecs.BOM_UTF8) :]
                lines = _decode_lines(piece, decoding, drop_empty_lines, shown, policy, first_line, encoding)
                if lines or not yielded:
                    yield pa.table({"text": pa.array(lines, type=pa.string())})
                    yielded = True
        if not yielded:
            yield pa.table({"text": pa.array([], type=pa.string())})
        return
    data = read_input_bytes(fs, unit.file.path, compression=compression)
    if strip_bom and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    lines = _decode_lines(data, decoding, drop_empty_lines, shown, policy, named=encoding)
    typ = pa.string() if len(data) < 2**31 - 1 else pa.large_string()
    yield pa.table({"text": pa.array(lines, type=typ)})


def plan_text(
    paths: Any,
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    compression: str | None = "infer",
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_text`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_text.__name__
        'plan_text'
    """
    codecs.lookup(encoding)  # a bad encoding name fails here, in the caller, not in every task
    return plan_read(
        paths,
        read_text_unit,
        {"encoding": encoding, "drop_empty_lines": bool(drop_empty_lines), "compression": compression},
        **kwargs,
    )
