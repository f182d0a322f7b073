"""Stamp MQTT arrival times in a process of their own: ``python -m tests.arrival_clock URL TOPIC N``.

Timing tests must not stamp arrivals inside the pytest process: after a thousand tests its heap is
large, and one full garbage collection holds the GIL (and so paho's network thread) for 50-200 ms,
which CI saw as one late delivery per attempt on an otherwise idle machine. This process is small,
and its heap is frozen before it subscribes. It prints ``ready`` once subscribed, then one JSON list
of arrival times (seconds) once ``N`` messages arrived or 60 s passed.
"""

from __future__ import annotations

import gc
import json
import sys
import time

from sensors_sim.recorder import Recorder


def main(url: str, topic: str, n: int) -> None:
    rec = Recorder(url, topic)
    rec.wait_subscribed()
    gc.collect()
    gc.freeze()  # what is alive now is never scanned again
    print("ready", flush=True)
    got: list[float] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < n and time.monotonic() < deadline:
            got += [m.t for m in rec.take()]
            time.sleep(0.02)
    finally:
        rec.close()
    print(json.dumps(got), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
