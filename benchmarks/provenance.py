"""Benchmark: what the provenance label costs (docs/provenance.md): images encoded per second with and
without the XMP label, alternating in one run, per format, at one size.

    .venv/bin/python benchmarks/provenance.py [--size 1024] [--rounds 7] [--per-round 10] [--json out.json]
    .venv/bin/python benchmarks/provenance.py --quick     # 64 px, 2 rounds (a test runs it)

Each round encodes `--per-round` images with the label, then as many without (the order swapped every
other round), the picture a fixed pseudo-random one (noise compresses like a photo, not like a flat
colour), with the generation parameters recorded as a worker records them. Reported: the median over
rounds of images/s, and the ratio. C2PA signing is not built yet (#20), so it has no row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from easel.domain.spec import GenerationSpec, OutputFormat  # noqa: E402
from easel.imaging import encode, generation_params  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.size, a.rounds, a.per_round = 64, 2, 2
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8), "RGB")
    spec = GenerationSpec(prompt="a red circle", model="bench", width=a.size, height=a.size, seed=1, steps=20)
    params = generation_params(spec, 1)
    rows = []
    for fmt in OutputFormat:
        rates: dict[bool, list[float]] = {True: [], False: []}
        for r in range(a.rounds):
            for label in (True, False) if r % 2 == 0 else (False, True):
                start = time.perf_counter()
                for _ in range(a.per_round):
                    encode(picture, fmt, None, params, label=label)
                rates[label].append(a.per_round / (time.perf_counter() - start))
        with_label, without = statistics.median(rates[True]), statistics.median(rates[False])
        extra = len(encode(picture, fmt, None, params).data) - len(
            encode(picture, fmt, None, params, label=False).data
        )
        rows.append(
            {
                "format": fmt.value,
                "with_label": with_label,
                "without": without,
                "ratio": with_label / without,
                "bytes_added": extra,
            }
        )
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cpus {os.cpu_count()}; "
        f"{a.size}x{a.size} noise, {a.rounds} rounds of {a.per_round}"
    )
    print("| format | images/s with the label | without | ratio | bytes added |")
    print("|---|---|---|---|---|")
    for r in rows:
        rate = f"{r['with_label']:.2f} | {r['without']:.2f} | {r['ratio']:.3f}"
        print(f"| {r['format']} | {rate} | {r['bytes_added']} |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "load": load}, indent=2))


if __name__ == "__main__":
    main()
