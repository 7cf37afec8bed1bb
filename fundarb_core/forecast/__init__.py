"""Funding forecasters: targets, models behind one interface, walk-forward evaluation."""
