"""A segment-order-only module (``--*.python-segment-order-pymod-name``): yields every other segment
and records the call next to the main module's records (the path comes from its config string)."""

from __future__ import annotations

import json


def getSegmentList(corpusName, segmentList, config, **kwargs):
    path = dict(p.partition(":")[::2] for p in config.split(",") if p).get("record")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "fake_order.getSegmentList", "config": config, "n": len(segmentList)}) + "\n")
    yield from segmentList[::2]
