"""Domain primitives shared by every layer: errors, digests, events, content-addressed storage, config.

Nothing here imports from `streams`, `projections`, `commands` or `cli`.
"""
