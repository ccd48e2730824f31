"""How much memory training a network takes, and how much this machine, or its container, has left.

Linux grants an allocation it cannot back and kills the process (exit 137, without a word) once the
pages are touched; NumPy's MemoryError comes only for one array larger than the whole machine. So a
network is priced from its outline and refused before a weight is drawn.
"""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")
# A container's limit and what it uses already: cgroup v2, then v1 (whose "no limit" is a huge number).
CGROUP_FILES = ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                 Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")))


def available_memory() -> int | None:
    """Bytes this process can still take: the kernel's estimate (MemAvailable), or what a cgroup
    limit leaves if that is less; None when neither can be read (then nothing is checked)."""
    amounts = []
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        amounts.append(int(fields["MemAvailable"].split()[0]) * 1024)  # "23997652 kB"
    except (OSError, KeyError, IndexError, ValueError):
        pass
    for limit_file, usage_file in CGROUP_FILES:
        limit = _read_bytes(limit_file)  # None: "max" (no limit), or no such cgroup
        if limit is not None:
            amounts.append(max(0, limit - (_read_bytes(usage_file) or 0)))
    return min(amounts, default=None)


def _read_bytes(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def training_bytes(outline, optimizer_arrays: int, batch_size: int, keeps_best: bool) -> int:
    """The least memory training the network of ``outline`` takes: its parameters, their gradients,
    the optimiser's ``optimizer_arrays`` arrays of the same size (moments, scratch), a copy of the
    parameters when early stopping ``keeps_best`` epoch's, and a batch's activations, forward and
    backward. Building the network takes less than this: each weight is drawn into its place a
    block at a time, and packed into the flat buffer one layer at a time."""
    copies = 2 + optimizer_arrays + int(keeps_best)
    return outline.itemsize * (copies * outline.num_params() + 2 * outline.activations(batch_size))


def size_text(n_bytes: float) -> str:
    """Bytes as the summary and the memory check print them: "0.94 MB", "36.01 GB", "180.05 TB"."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes / 1e6:.2f} MB"
