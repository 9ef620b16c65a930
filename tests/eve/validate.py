#!/usr/bin/env python3
"""Validates EVE records (JSON lines on stdin) against Suricata's schema.

Each record's extension object `tlsinspect` is removed first (DESIGN.md §7);
what is left must be valid Suricata EVE. Prints one line per invalid record
and exits 1 if there was any.  Usage: validate.py SCHEMA < records.jsonl
"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema)
bad = 0
count = 0
for n, line in enumerate(sys.stdin, 1):
    if not line.strip():
        continue
    count += 1
    rec = json.loads(line)
    rec.pop("tlsinspect", None)
    errors = sorted(validator.iter_errors(rec), key=lambda e: list(e.path))
    for e in errors[:5]:
        bad += 1
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        print(f"record {n} ({rec.get('event_type')}): {where}: {e.message}")
print(f"{count} record(s) checked, {bad} error(s)", file=sys.stderr)
sys.exit(1 if bad else 0)
