"""What every result object offers a notebook user: its tables as pandas DataFrames.

Results (``IdentifyResult``, ``CompareResult``, ``CausalResult`` …) build their tables as lists of row dicts,
which is what the CSV writers take; :class:`Tabular` turns the same rows into DataFrames, so a table has one
definition whether it is read from disk or from Python.
"""

from __future__ import annotations

from typing import Any

from sparcom.errors import SparcomError


class Tabular:
    """Mixin for results with ``tables() -> {name: [row dict, ...]}``."""

    def tables(self) -> dict[str, list[dict[str, Any]]]:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def frames(self) -> dict[str, Any]:
        """Every table as a pandas DataFrame, by name (the CSV file stems of the output folder)."""
        import pandas as pd

        return {name: pd.DataFrame.from_records(rows) for name, rows in self.tables().items()}

    def table(self, name: str):
        """One table as a pandas DataFrame."""
        tables = self.tables()
        if name not in tables:
            raise SparcomError(f"no table {name!r}; this result has {', '.join(sorted(tables)) or 'none'}")
        import pandas as pd

        return pd.DataFrame.from_records(tables[name])
