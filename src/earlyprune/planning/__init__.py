"""How much to remove and which channels: one global ranking → a plan for a target (channels, MACs, parameters
or step time), hardware-friendly widths (``round_to``), and the levels (channels removed, weights masked)."""
