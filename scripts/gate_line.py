#!/usr/bin/env python3
"""Reads one `lockstep run --json` object on stdin and prints its parity gate as one line:
status, the time the gate added, the reference's time (and its probe-prefill part), the
candidate's time, whether the reference ran beside the candidate's creation, and the worst
cosine. argv[1], if given, labels the line."""
import json
import sys

p = json.load(sys.stdin)["parity"]
label = (sys.argv[1] + "  ") if len(sys.argv) > 1 else ""
print("%sgate %s: %.0f ms added (reference %.0f = prefill %.0f + steps, %s %.0f, overlapped %s), "
      "worst cosine %.5f" % (label, p["status"], p["ms"], p["reference_ms"],
                             p["reference_prefill_ms"], p["candidate"], p["candidate_ms"],
                             p["reference_overlapped"], p["worst"]["value"]))
