"""bench/study_overhead.py's attribution of a sweep's overhead, on a timeline built by hand.

Two slots; trial a: steps computing 0.5–1.5 and 1.6–2.6 (results at 1.5 and 2.6), ends at 2.7; trial b: 1.0–2.0
(result 2.0), ends at 2.05; trial c takes b's slot, computing 2.3–3.3 (result at 3.3), ends at 3.35; the summary
at 4.0. Slot-seconds: 2 × 4.0 = 8.0, compute 4.0, overhead 4.0 = start (0.5 + 1.0) + reports (2.6 − 1.5 − 1.0)
+ between (2.3 − 2.05) + tail (3.35 − 2.7) + end (2 × 0.65) + other (from a trial's last result to its end: 0.1
for a, 0.05 for c, 0.05 for b).
"""

from __future__ import annotations

import math

import pytest

from tests.bench import load_bench


@pytest.fixture(scope="module")
def bench():
    yield from load_bench("study_overhead.py")


EVENTS = [
    ("result", "a", 1.5, 1.0),
    ("result", "b", 2.0, 1.0),
    ("complete", "b", 2.05, 0.0),
    ("result", "a", 2.6, 1.0),
    ("complete", "a", 2.7, 0.0),
    ("result", "c", 3.3, 1.0),
    ("complete", "c", 3.35, 0.0),
]


def test_attribution_of_a_hand_made_timeline(bench):
    parts = bench.attribute(EVENTS, workers=2, wall=4.0, offset=0.0)
    expected = {"start": 0.5 + 1.0, "reports": 2.6 - 1.5 - 1.0, "between": 2.3 - 2.05,
                "tail": 3.35 - 2.7, "end": 2 * (4.0 - 3.35)}
    assert parts.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(parts[name], value, abs_tol=1e-9), (name, parts[name], value)
    overhead = 2 * 4.0 - 4.0
    assert math.isclose(overhead - sum(parts.values()), 0.1 + 0.05 + 0.05)  # from last results to trial ends


def test_offset_moves_every_event_by_the_interpreter_start(bench):
    shifted = [(kind, trial, t + 0.3, compute) for kind, trial, t, compute in EVENTS]
    assert bench.attribute(shifted, workers=2, wall=4.3, offset=0.0) == pytest.approx(
        bench.attribute(EVENTS, workers=2, wall=4.3, offset=0.3))
