#!/usr/bin/env python3
"""Splices the policy's JSON Schema (`runner-fence schema`) into the chart's
values.schema.json: `$defs.RunnerPolicy` is the policy document and the other
`$defs` are the policy's own. The chart's own properties are written by hand in
values.schema.json and kept. tests/chart.rs fails when the splice is stale.

    cargo run -q -- schema | python3 scripts/update-chart-schema.py
"""
import json
import sys
from pathlib import Path

path = Path(__file__).resolve().parent.parent / "charts/runner-fence/values.schema.json"
policy = json.load(sys.stdin)
values = json.loads(path.read_text())
defs = policy.pop("$defs", {})
policy.pop("$schema", None)
values["$defs"] = {"RunnerPolicy": policy, **defs}
path.write_text(json.dumps(values, indent=2) + "\n")
print(f"wrote {path}")
