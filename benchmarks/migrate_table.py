"""Rename a tabulated benchmark's parameters to the names the search uses now (``search/blackbox.py``).

Search parameters were once short words (``mmd_intra``, ``lr``, ``milestone1_frac``, ...); they are now the
dotted config fields they set (``loss.mmd_intra_weight``, ``optim.lr``, ``optim.milestone_shares.0``;
``trainables/params.py``). A table made before keeps its rows, values and commits; only the names change::

    python benchmarks/migrate_table.py benchmarks/tables/sysu-quick

The folder is rewritten in place, each file through a temporary file and an atomic rename; stop any
tabulating process first (a row it appends afterwards keeps the old names until the next pass: lookups
read the names in ``meta.json`` only, so such a row is read correctly meanwhile). A table already renamed
is left alone. ``meta.json`` records the rename (``renamed``: the map, the space digest the
table was made with, the commit that renamed it), so a row regenerated at its own (older) commit is compared
with the old names in mind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aminet.cli import ArgumentParser, UsageError  # noqa: E402

OLD_NAMES = {
    "mmd_intra": "loss.mmd_intra_weight",
    "mmd_inter": "loss.mmd_inter_weight",
    "bandwidths": "loss.mmd_multipliers",
    "upper_body_ratio": "model.upper_body_ratio",
    "lr": "optim.lr",
    "warmup_frac": "optim.warmup_share",
    "schedule": "optim.schedule",
    "milestone1_frac": "optim.milestone_shares.0",
    "milestone2_frac": "optim.milestone_shares.1",
}


def renamed(params: dict) -> dict:
    return {OLD_NAMES.get(k, k): v for k, v in params.items()}


def migrate(folder: Path) -> int:
    """Rename the folder's parameters in place; the number of names changed (0: nothing to do)."""
    import hashlib

    from search import blackbox
    from search.spaces import get_space

    meta_file, rows_file = folder / blackbox.META, folder / blackbox.ROWS
    if not meta_file.is_file():
        raise UsageError(f"{folder}: no {blackbox.META} (not a table folder)")
    meta = json.loads(meta_file.read_text())
    rows = blackbox.read_rows(rows_file)
    changed = sum(k in OLD_NAMES for c in [*meta["configs"], *rows] for k in c["params"])
    if not changed:
        return 0
    space = get_space(meta["space"])
    for c in meta["configs"]:
        c["params"] = renamed(c["params"])
    for r in rows:
        r["params"] = renamed(r["params"])
    blackbox.check_names(meta, space, meta_file)  # every new name is one of today's space
    from tabulate_space import git_commit

    if "renamed" not in meta:  # (a second pass renames rows that a process of the old code appended since)
        meta["renamed"] = {
            "names": OLD_NAMES,
            "space_sha256_before": meta.get("space_sha256"),
            "commit": git_commit(),
            "why": "search parameters are named by the config fields they set (trainables/params.py)",
        }
        meta["space_sha256"] = hashlib.sha256(space.text().encode()).hexdigest()
    blackbox.write_atomic(rows_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    blackbox.write_atomic(meta_file, json.dumps(meta, indent=1) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path, help="table folders")
    args = p.parse_args(argv)
    try:
        for folder in args.tables:
            n = migrate(folder)
            print(f"{folder}: {n} name(s) renamed" if n else f"{folder}: already named by config fields")
    except UsageError as exc:
        print(f"migrate_table: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
