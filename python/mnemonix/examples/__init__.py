"""Runnable examples (``python -m mnemonix.examples.<name>``, or under ``torchrun``)."""
