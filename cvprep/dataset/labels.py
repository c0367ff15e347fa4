"""Where a file's class comes from when it is not its folder: its name, or a label table.

The ``labels`` parameter of every dataset job (``--labels`` on the command line) is parsed
here, once, by :func:`parse_labels`:

- ``"folders"`` (the default): class subfolders, or split folders of class subfolders;
- ``"name"``: the class is the file name up to the last separator (``.``, ``_``, ``-`` or a
  space) before a trailing number: ``cat.0.jpg`` → ``cat``, ``dog_12.png`` → ``dog``,
  ``great_pyrenees_12.jpg`` → ``great_pyrenees``;
- ``"name:REGEX"``: the first group of a regular expression searched in the file name;
- ``"TABLE"`` or ``"TABLE:FILE_COLUMN,LABEL_COLUMN"``: a CSV or TSV file with a header.

Examples
--------
>>> from cvprep.dataset.labels import parse_labels
>>> parse_labels("name").text()
'name'
>>> parse_labels("labels.csv:id,breed").columns
('id', 'breed')
>>> parse_labels("name:^[a-z]+")
Traceback (most recent call last):
cvprep.errors.ParameterError: `labels` should be name:REGEX with a group (...) ...
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Literal

from cvprep import params
from cvprep.dataset.containers import Entry, Problem, safe_parts
from cvprep.errors import ParameterError

FOLDERS, NAME, TABLE = "folders", "name", "table"
NAME_PATTERN = r"^(.+?)[ ._-]+\d+(?:\.[^.]*)?$"
# Header names recognised (case-insensitively), in order of preference.
FILE_COLUMNS = (
    "id",
    "file",
    "filename",
    "file_name",
    "image",
    "image_id",
    "image_name",
    "img",
    "path",
    "filepath",
    "file_path",
    "fname",
)
LABEL_COLUMNS = (
    "label",
    "labels",
    "class",
    "class_name",
    "classname",
    "category",
    "breed",
    "species",
    "target",
    "y",
)
# What an id without an extension may be completed with (the formats OpenCV decodes).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif",
     ".jp2", ".j2k", ".pbm", ".pgm", ".ppm", ".pnm", ".pam", ".pfm", ".hdr", ".pic", ".ras",
     ".sr", ".avif", ".exr"}
)  # fmt: skip
_EXPECTED = "folders, name, name:REGEX, or a CSV/TSV label table (TABLE[:FILE_COLUMN,LABEL_COLUMN])"


@dataclass(frozen=True)
class LabelSpec:
    """A parsed ``labels`` setting (see the module docstring)."""

    kind: Literal["folders", "name", "table"]
    pattern: str = ""  # name: the regular expression
    table: str = ""  # table: its path, as given
    columns: tuple[str, str] | None = None  # table: (file column, label column)

    def text(self) -> str:
        """The setting as typed: what run records store and compare."""
        if self.kind == FOLDERS:
            return FOLDERS
        if self.kind == NAME:
            return NAME if self.pattern == NAME_PATTERN else f"{NAME}:{self.pattern}"
        return self.table + (f":{','.join(self.columns)}" if self.columns else "")


def parse_labels(value: object) -> LabelSpec:
    """Parse a ``labels`` setting: ``None``/``"folders"``, ``"name"``, ``"name:REGEX"``, or a
    label table ``"TABLE[:FILE_COLUMN,LABEL_COLUMN]"``. A regular expression must compile and
    have a group; whether a table exists is checked against the source."""
    if value is None or isinstance(value, LabelSpec):
        return value or LabelSpec(FOLDERS)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise params.fail("labels", _EXPECTED, value)
    if value == FOLDERS:
        return LabelSpec(FOLDERS)
    if value == NAME:
        return LabelSpec(NAME, NAME_PATTERN)
    if value.startswith(f"{NAME}:"):
        return LabelSpec(NAME, _check_pattern(value[len(NAME) + 1 :], value))
    table, columns = value, None
    head, colon, tail = value.rpartition(":")
    if colon and head and tail.count(",") == 1 and "/" not in tail:
        file_column, label_column = (part.strip() for part in tail.split(","))
        if not (file_column and label_column) or file_column == label_column:
            raise params.fail("labels", "TABLE:FILE_COLUMN,LABEL_COLUMN (two columns)", value)
        table, columns = head, (file_column, label_column)
    return LabelSpec(TABLE, table=table, columns=columns)


def _check_pattern(pattern: str, value: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise params.fail("labels", f"name:REGEX with a valid regex ({exc})", value) from None
    if compiled.groups < 1:
        raise params.fail("labels", "name:REGEX with a group (...) that captures the class", value)
    return pattern


def class_name_problem(label: str) -> str:
    """Why ``label`` cannot name a class folder ("" when it can)."""
    if not label:
        return "empty label"
    if label.startswith(".") or any(c in label for c in "/\\\0") or len(label.encode()) > 255:
        return f"label {label!r} cannot be a folder name"
    return ""


def file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- names
def label_by_name(
    entries: list[Entry], pattern: str, problems: list[Problem]
) -> list[tuple[Entry, str]]:
    """Each entry with the class its file name gives; the others go to ``problems``
    (``no_label``: the pattern does not match or captures nothing; ``bad_label``)."""
    regex = re.compile(pattern)
    labelled, matched = [], 0
    for entry in entries:
        match = regex.search(file_name(entry.path))
        if match is None:
            problems.append(
                Problem(entry.name, "no_label", f"the file name does not match {pattern!r}")
            )
            continue
        matched += 1
        label = (match.group(1) or "").strip()
        reason = class_name_problem(label)
        if reason:
            problems.append(Problem(entry.name, "no_label" if not label else "bad_label", reason))
        else:
            labelled.append((entry, label))
    if entries and not labelled:
        example = file_name(entries[0].path)
        what = "matches none" if not matched else "gives a class to none"
        raise ParameterError(
            f"`labels` pattern {pattern!r} {what} of the {len(entries)} file names "
            f"(e.g. {example!r}). Received: labels="
            + repr(NAME if pattern == NAME_PATTERN else f"{NAME}:{pattern}")
        )
    return labelled


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Row:
    line: int  # in the table file, the header being line 1
    file: str
    label: str


def read_table(data: bytes, where: str, columns: tuple[str, str] | None) -> list[Row]:
    """The rows of a CSV or TSV label table (delimiter sniffed; a header is required)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParameterError(f"`labels` table {where} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text, where))
    header = next(reader, None)
    if not header:
        raise ParameterError(f"`labels` table {where} is empty")
    file_index, label_index = _columns([cell.strip() for cell in header], where, columns)
    rows = []
    start = reader.line_num + 1  # where the row being read begins (a quoted field may span)
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                start = reader.line_num + 1
                continue  # a blank line
            row = Row(
                reader.line_num,
                cells[file_index].strip() if file_index < len(cells) else "",
                cells[label_index].strip() if label_index < len(cells) else "",
            )
            if "\n" in row.file or "\n" in row.label:
                raise csv.Error("a quoted field runs over several lines (a quote left open?)")
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ParameterError(f"`labels` table {where}, line {start}: {exc}") from None
    if not rows:
        raise ParameterError(f"`labels` table {where} has a header but no rows")
    return rows


def _dialect(text: str, where: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;")
    except csv.Error:
        first = sample.split("\n", 1)[0]
        return csv.excel_tab if "\t" in first or where.lower().endswith(".tsv") else csv.excel


def _columns(header: list[str], where: str, columns: tuple[str, str] | None) -> tuple[int, int]:
    lowered = [cell.lower() for cell in header]
    if columns is not None:
        found = []
        for wanted in columns:
            if wanted in header:
                found.append(header.index(wanted))
            elif wanted.lower() in lowered:
                found.append(lowered.index(wanted.lower()))
            else:
                raise ParameterError(
                    f"`labels` table {where} has no column {wanted!r} (its columns: "
                    f"{', '.join(header)})"
                )
        return found[0], found[1]
    file_index = next((lowered.index(n) for n in FILE_COLUMNS if n in lowered), None)
    label_index = next((lowered.index(n) for n in LABEL_COLUMNS if n in lowered), None)
    if file_index is not None and label_index is None and len(header) == 2:
        label_index = 1 - file_index  # e.g. id,has_cactus
    if file_index is None or label_index is None or file_index == label_index:
        raise ParameterError(
            f"`labels` table {where}: cannot tell the file and label columns from its header "
            f"({', '.join(header)}); name them: {where}:FILE_COLUMN,LABEL_COLUMN"
        )
    return file_index, label_index


class TableLabeller:
    """Matches a table's rows to the image files of a folder (inside a source)."""

    def __init__(
        self, entries: list[Entry], images: str, table_name: str, prefix: str = ""
    ) -> None:
        self.images, self.table_name = images, table_name
        self.prefix = prefix  # the archive's one folder the entries' paths leave out ("train/")
        base = f"{images}/" if images else ""
        self.inside = {e.path[len(base) :]: e for e in entries if e.path.startswith(base)}
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for relative in self.inside:
            stem, dot, suffix = relative.rpartition(".")
            if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES:
                self.by_stem[stem].append(relative)

    def resolve(self, file: str) -> tuple[str | None, str, str]:
        """The file a row names (relative to the images folder), or why none: (path, kind,
        reason)."""
        parts = safe_parts(file) if file else ()
        if parts is None:
            return None, "unsafe_path", f"{file!r} points outside the images folder"
        if not parts:
            return None, "missing_file", "no file named on this line"
        key = "/".join(parts)
        if self.prefix and key.startswith(self.prefix) and key not in self.inside:
            key = key[len(self.prefix) :]  # an id with the archive's folder: train/b.jpg
        if key in self.inside:
            return key, "", ""
        candidates = self.by_stem.get(key, [])
        if len(candidates) == 1:
            return candidates[0], "", ""
        if candidates:
            return None, "ambiguous_file", f"{file!r} could be {' or '.join(candidates)}"
        where = f"{self.images}/" if self.images else "the source's top folder"
        return None, "missing_file", f"no file {file!r} (with or without an extension) in {where}"

    def label(self, rows: list[Row], problems: list[Problem]) -> list[tuple[Entry, str]]:
        """Each named file with its label; every row that cannot be used, and every image no
        row names, goes to ``problems``."""
        claims: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            relative, kind, reason = self.resolve(row.file)
            if relative is None:
                cls = row.label if not class_name_problem(row.label) else ""
                problems.append(Problem(self._where(row), kind, reason, cls))
            else:
                claims[relative].append(row)
        if not claims:
            raise ParameterError(
                f"`labels`: none of the {len(rows)} rows of {self.table_name} names a file in "
                f"{self.images or 'the source'} (line {rows[0].line}: {rows[0].file!r}); give "
                "the images folder: --images DIR (images=DIR)"
            )
        labelled = [
            pair
            for relative, named in sorted(claims.items())
            for pair in self._claimed(relative, named, problems)
        ]
        problems.extend(self._unlabelled(set(claims)))
        return labelled

    def _where(self, row: Row) -> str:
        return f"{self.table_name}:{row.line}"

    def _claimed(
        self, relative: str, rows: list[Row], problems: list[Problem]
    ) -> list[tuple[Entry, str]]:
        entry, first = self.inside[relative], rows[0]
        if len({row.label for row in rows}) > 1:
            for row in rows:
                others = "; ".join(
                    f"{other.label!r} on line {other.line}" for other in rows if other is not row
                )
                problems.append(
                    Problem(
                        self._where(row),
                        "label_conflict",
                        f"{entry.name} is labelled {row.label!r} here and {others}: left out",
                    )
                )
            return []
        for row in rows[1:]:
            problems.append(
                Problem(
                    self._where(row),
                    "duplicate_row",
                    f"{entry.name} is already labelled {first.label!r} on line {first.line}",
                    first.label,
                )
            )
        reason = class_name_problem(first.label)
        if reason:
            kind = "no_label" if not first.label else "bad_label"
            problems.append(Problem(self._where(first), kind, f"{entry.name}: {reason}"))
            return []
        return [(entry, first.label)]

    def _unlabelled(self, named: set[str]) -> list[Problem]:
        """Images no row names: each one in the folders the named images are in; elsewhere
        (a ``test/`` beside ``train/``, say) one line per folder with its count, so that
        nothing is left out unsaid and thousands of test images do not flood the list."""
        folders = {relative.rpartition("/")[0] for relative in named}
        problems, elsewhere = [], Counter[str]()
        for relative, entry in sorted(self.inside.items()):
            suffix = f".{relative.rpartition('.')[2].lower()}"
            if relative in named or suffix not in IMAGE_SUFFIXES:
                continue
            folder = relative.rpartition("/")[0]
            if folder in folders:
                problems.append(
                    Problem(entry.name, "unlabelled", f"no row of {self.table_name} names it")
                )
            else:
                base = entry.name[: len(entry.name) - len(relative)]
                elsewhere[f"{base}{folder}/" if folder else base or "./"] += 1
        problems += [
            Problem(
                folder,
                "unlabelled",
                f"{count} image(s) in this folder, none named by a row of {self.table_name}",
                folder=True,
            )
            for folder, count in sorted(elsewhere.items())
        ]
        return problems
