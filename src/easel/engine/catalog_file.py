"""Adding a model to the catalog file (`easel models pull`, `easel models add`).

An entry is appended as a TOML table at the end of the file, so what is there (comments, order) stays as
it is. The whole new text is validated with `Catalog.parse` before anything is written, then written
atomically (a temporary file in the same folder, then `os.replace`): a reader sees the old catalog or the
new one, never half of it, and a refused entry leaves the file untouched. A path inside the catalog's
folder is written relative to it (as the catalog's own entries are), any other path absolute.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from easel.domain.catalog import Catalog

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CatalogFileError(Exception):
    """The catalog cannot take the entry; the message says why."""

    @property
    def message(self) -> str:
        return str(self.args[0])


def catalog_path_for(path: Path, catalog: Path) -> str:
    """How the catalog at `catalog` names `path`: relative to the catalog's folder when inside it."""
    target = path.expanduser().resolve()
    try:
        return target.relative_to(catalog.resolve().parent).as_posix()
    except ValueError:
        return str(target)


def default_name(text: str) -> str:
    """A model name made from a hub id's or a path's last part: lower case, other characters as '-'."""
    last = text.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-._")
    return name or "model"


def _read(catalog: Path) -> str | None:
    try:
        return catalog.read_text()
    except FileNotFoundError:
        return None


def _parse(text: str, catalog: Path) -> Catalog:
    return Catalog.parse(text, base_dir=str(catalog.resolve().parent), origin=str(catalog))


def check_new_name(catalog: Path, name: str) -> None:
    """Raise CatalogFileError when `name` cannot be added to the catalog: not a usable name, already a
    model's name or alias, or the catalog itself does not parse."""
    if not _NAME.fullmatch(name):
        raise CatalogFileError(
            f"{name!r} is not a usable model name: letters, digits, '.', '_' and '-', starting with a letter "
            f"or digit (choose one with --name)"
        )
    text = _read(catalog)
    if text is None:
        return
    try:
        current = _parse(text, catalog)
    except ValueError as e:
        raise CatalogFileError(f"the catalog does not load as it is, fix it first: {e}") from e
    taken = {n.lower(): m.name for m in current.models.values() for n in (m.name, *m.aliases)}
    if name.lower() in taken:
        owner = taken[name.lower()]
        what = "a model" if owner.lower() == name.lower() else f"an alias of model {owner!r}"
        raise CatalogFileError(
            f"{catalog} already has {what} named {name!r}: choose another name with --name"
        )


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to the catalog")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def entry_text(name: str, fields: dict[str, Any], comment: str | None = None) -> str:
    """The TOML table of one model entry (None values and empty tables left out)."""
    lines = [f"# {comment}"] if comment else []
    lines.append(f"[models.{_key(name)}]")
    lines += [f"{_key(k)} = {_value(v)}" for k, v in fields.items() if v is not None and v != {}]
    return "\n".join(lines) + "\n"


def add_model(catalog: Path, name: str, fields: dict[str, Any], comment: str | None = None) -> str:
    """Append the entry `name` (`fields`: its keys, in order) to the catalog file, creating the file when
    there is none; returns the text added. Raises CatalogFileError, with the file unchanged, when the name
    is taken or the new catalog would not load."""
    check_new_name(catalog, name)
    old = _read(catalog)
    block = entry_text(name, fields, comment)
    if old is None:
        new = "# The model catalog (docs/models.md). Written by `easel models`.\n\n" + block
    else:
        new = old + ("" if old.endswith("\n") or not old else "\n") + "\n" + block
    try:
        _parse(new, catalog)
    except ValueError as e:
        raise CatalogFileError(f"the entry was not added, the catalog would not load with it: {e}") from e
    _write_atomically(catalog, new)
    return block


def _write_atomically(path: Path, text: str) -> None:
    target = path.resolve()  # a symlinked catalog: replace the file it points at, not the link
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
