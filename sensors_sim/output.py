"""Write a simulation to a deterministic ``.jsonl.gz`` file plus its labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sensors_sim import labels as labelling
from sensors_sim.encode import iter_chunks
from sensors_sim.engine import Simulation
from sensors_sim.fileio import Writer, embeddable, encode_lines


def write_simulation(
    sim: Simulation, out: Path, *, progress: Callable[[int], None] | None = None, compresslevel: int = 6
) -> tuple[int, Path]:
    """Write every message in send order (``t`` = virtual send time); returns (count, labels path)."""
    with Writer(out, compresslevel=compresslevel) as w:
        for chunk in iter_chunks(sim, 0, chunk_size=8192):
            ok = [True if not bad else embeddable(p) for p, bad in zip(chunk.payloads, chunk.malformed, strict=True)]
            w.write(encode_lines(chunk.emit, chunk.topics, chunk.payloads, ok), len(chunk.emit))
            if progress is not None:
                progress(len(chunk.emit))
        count = w.count
    lpath = labelling.labels_path(out)
    labelling.write(lpath, sim.labels)
    return count, lpath
