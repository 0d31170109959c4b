"""Backends of each op, one module per op (``hopfield``, ``salience``, ``lifespan``).

Each backend is a small function plus a :class:`mnemonix._dispatch.Backend`
declaration of what it supports; :mod:`mnemonix.ops` picks among them.
"""
