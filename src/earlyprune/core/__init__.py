"""The floor every other layer stands on: errors, argument rules, registries, batches, timing, DDP agreement.

Imports nothing above itself (``tests/test_layers.py`` checks the order of the folders)."""
