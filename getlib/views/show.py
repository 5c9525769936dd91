"""How every notebook shows a table and an image grid (the one view module all notebooks share).

- `table`: rows (dicts) or a DataFrame -> a DataFrame of display strings, each cell by
  `io.cell_text`, the rule of the committed Markdown tables: floats to 4 significant digits, "-"
  where a value is not applicable (None, NaN, a column the row lacks), never NaN. For display
  only: the rows and files keep their values (None stays null in JSON and empty in CSV).
- `grid`: model-space images -> one PIL image, each tile enlarged by pixel repetition (nearest
  neighbour) to at least 64 pixels a side, 2/3 inch at 96 dpi: an 8x8 digit is readable.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image
from torch import Tensor

from getlib.images import image_grid
from getlib.io import cell_text

__all__ = ["table", "grid", "TILE_PIXELS"]

TILE_PIXELS = 64   # the least side of a tile on screen


def _cell(v: object) -> str:
    if isinstance(v, np.generic):   # numpy scalars as Python ones (np.float32 is no float)
        v = v.item()
    return cell_text(v)


def table(rows: list[dict] | pd.DataFrame, columns: list[str] | None = None, names: dict[str, str] | None = None,
          index: str | None = None) -> pd.DataFrame:
    """A table for display: `columns` (default: every column, in order of appearance) of `rows`,
    renamed by `names`, with the column `index` (if given) as the row labels; every cell a string
    (`io.cell_text`). A DataFrame keeps its own index; its float columns holding only whole numbers
    and gaps (integers that pandas made floats) are shown as integers."""
    names = names or {}
    if isinstance(rows, pd.DataFrame):
        frame = rows if columns is None else rows[columns]
        shown = pd.DataFrame(index=frame.index)
        for c in frame.columns:
            values = frame[c]
            whole = values.dtype.kind == "f" and values.notna().any() and bool(
                (values.dropna() == values.dropna().round()).all())
            shown[names.get(c, c)] = [_cell(int(v) if whole and pd.notna(v) else v) for v in values]
        return shown
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    shown = pd.DataFrame([[_cell(r.get(c)) for c in columns] for r in rows],
                         columns=[names.get(c, c) for c in columns])
    return shown.set_index(names.get(index, index)) if index else shown


def grid(images: Tensor, nrow: int | None = None) -> Image.Image:
    """Model-space images (N, C, H, W) as one grid image, `nrow` per row, each tile at least
    TILE_PIXELS a side (whole-pixel enlargement: nearest neighbour)."""
    return Image.fromarray(image_grid(images, nrow, scale=max(1, math.ceil(TILE_PIXELS / images.shape[-1]))))
