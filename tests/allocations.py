"""The memory a call takes, for tests that bound it.

    from allocations import traced_peak

    response, peak = traced_peak(client.post, "/predict", json=body)
    assert peak < 4 * len(body)
"""

from __future__ import annotations

import tracemalloc


def traced_peak(call, *args, **kwargs):
    """``call(*args, **kwargs)``'s result and the most memory Python's allocators held while it ran
    (tracemalloc, which counts NumPy's arrays too), in bytes."""
    tracemalloc.start()
    try:
        result = call(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
