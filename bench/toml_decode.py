#!/usr/bin/env python3
"""The peer in 'make bench': CPython's tomllib decoding the same file into the
same tagged JSON that build/tests/toml-decoder prints."""
import datetime
import json
import math
import sys
import tomllib


def tag(v):
    if isinstance(v, dict):
        return {k: tag(x) for k, x in v.items()}
    if isinstance(v, list):
        return [tag(x) for x in v]
    if isinstance(v, bool):
        return {"type": "bool", "value": "true" if v else "false"}
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        s = "nan" if math.isnan(v) else repr(v)
        return {"type": "float", "value": s}
    if isinstance(v, datetime.datetime):
        return {"type": "datetime" if v.tzinfo else "datetime-local", "value": v.isoformat()}
    if isinstance(v, datetime.date):
        return {"type": "date-local", "value": v.isoformat()}
    if isinstance(v, datetime.time):
        return {"type": "time-local", "value": v.isoformat()}
    return {"type": "string", "value": v}


json.dump(tag(tomllib.load(sys.stdin.buffer)), sys.stdout)
