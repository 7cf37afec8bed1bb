"""Simulation: the paper venue (fills, fees, funding, margin) and fault injection, fed by a market view rather
than by warehouse tables."""
