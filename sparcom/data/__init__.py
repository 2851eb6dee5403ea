"""Instruction datasets: the row schema, HexaInst, and prompt formatting."""

from sparcom.data.schema import CATEGORIES, CATEGORY_LABELS, InstructionRow, read_rows, write_rows

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "InstructionRow", "read_rows", "write_rows"]
