"""How much memory training a network takes, and how much this machine, or its container, has left.

Linux grants an allocation it cannot back and kills the process (exit 137, without a word) once the
pages are touched; NumPy's MemoryError comes only for one array larger than the whole machine. So a
network is priced from its outline and refused before a weight is drawn.
"""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")
# A container's limit, what it uses already and the statistics that say how much of that is file
# cache the kernel takes back before it kills anything: cgroup v2, then v1 (whose "no limit" is a
# huge number).
CGROUP_FILES = ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current"),
                 Path("/sys/fs/cgroup/memory.stat")),
                (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                 Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"), Path("/sys/fs/cgroup/memory/memory.stat")))
# In memory.stat: v1's count for the cgroup and those below it (as its usage counts), then v2's.
RECLAIMABLE = ("total_inactive_file", "inactive_file")
# Once trained, writing the version holds the network's parameters and gradients, the exported
# parameters, and the file read back to check and score it (its bytes, its arrays, the model): about
# this many copies of the parameters, measured; the optimiser's state is gone by then.
EXPORT_COPIES = 7

def available_memory() -> int | None:
    """Bytes this process can still take: the kernel's estimate (MemAvailable), or what a cgroup
    limit leaves if that is less (counting the cgroup's inactive file cache as free, as the kernel
    reclaims it first); None when neither can be read (then nothing is checked)."""
    amounts = []
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        amounts.append(int(fields["MemAvailable"].split()[0]) * 1024)  # "23997652 kB"
    except (OSError, KeyError, IndexError, ValueError):
        pass
    for limit_file, usage_file, stat_file in CGROUP_FILES:
        limit = _read_bytes(limit_file)  # None: "max" (no limit), or no such cgroup
        if limit is not None:
            used = max(0, (_read_bytes(usage_file) or 0) - _reclaimable(stat_file))
            amounts.append(max(0, limit - used))
    return min(amounts, default=None)


def _read_bytes(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _reclaimable(stat_file: Path) -> int:
    """The cgroup's inactive file cache, from its memory.stat ("inactive_file 123456" lines); 0 if unread."""
    try:
        fields = dict(line.split(None, 1) for line in stat_file.read_text().splitlines() if " " in line)
        return next((int(fields[key]) for key in RECLAIMABLE if key in fields), 0)
    except (OSError, ValueError):
        return 0


def training_bytes(outline, optimizer_arrays: int, batch_size: int, keeps_best: bool) -> int:
    """The memory training the network of ``outline`` and writing it take, the larger of the two
    phases: while it trains, its parameters, their gradients, the optimiser's ``optimizer_arrays``
    arrays of the same size (moments, scratch), a copy of the parameters when early stopping
    ``keeps_best`` epoch's, and a batch's activations, forward and backward; then the EXPORT_COPIES
    of the parameters writing the version holds. Building the network takes less than either: each
    weight is drawn into its place a block at a time, and packed into the flat buffer one layer at a time."""
    training = (2 + optimizer_arrays + int(keeps_best)) * outline.num_params() + 2 * outline.activations(batch_size)
    return outline.itemsize * max(training, EXPORT_COPIES * outline.num_params())


def size_text(n_bytes: float) -> str:
    """Bytes as the summary and the memory check print them: "0.94 MB", "36.01 GB", "180.05 TB"."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes / 1e6:.2f} MB"
