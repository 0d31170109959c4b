"""The C++ Hopfield kernel's batch classes on a small store (under 2048 rows).

Within a class a query's out, lse and argmax are the same bits whatever the batch beside it and
the thread count: below ``lane_min_batch`` queries the row scan, up to ``lane_one_group_batch``
one lane group whose rows go in parts fixed by the shape, past it lane groups over all the rows
in one part. The classes sum in different orders, so a test compares a query with the same query
inside the smallest batch of its own class.
"""

from __future__ import annotations


def smallest_batch_of_class(core, b: int) -> int:
    """The smallest batch in the class of a batch of ``b`` queries (keys and values no wider than
    ``core.lane_max_dims``)."""
    if b < core.lane_min_batch:
        return 1
    if b <= core.lane_one_group_batch:
        return core.lane_min_batch
    return core.lane_one_group_batch + 1
