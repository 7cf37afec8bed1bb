"""Metadata helpers shared by the asset modules."""

import pandas as pd


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A frame as a markdown table for asset metadata (``(none)`` when empty), floats to ``digits``
    significant figures so per-hour rates stay readable."""
    if frame.empty:
        return "(none)"
    return frame.to_markdown(index=False, floatfmt=f".{digits}g")
