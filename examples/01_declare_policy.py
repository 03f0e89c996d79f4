"""Declare a policy in Python, validate it, and see what a malformed one reports.

A policy names a task, the pipeline (pruner, distiller, quantizer) and a plan: per layer, the share of
output channels to remove and a bit-width. This script builds one for the bundled ``digits-cnn`` task,
checks it against the installed plugins, writes it to a YAML file, then shows the ``PolicyError`` a
misspelt field and an out-of-range option give (file, line and field).

Run: python examples/01_declare_policy.py [OUT_DIR]   (default: a temporary directory)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from orchestrator import PolicyError, load_policy, load_registry, parse_policy

out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="policy-"))
out_dir.mkdir(parents=True, exist_ok=True)

# 1. Build the policy as plain Python data: half the channels of every hidden layer, everything int8.
hidden = ["features.conv1", "features.conv2", "features.conv3", "classifier.fc1"]
layers = {name: {"prune_ratio": 0.5, "bits": 8} for name in hidden}
layers["classifier.fc2"] = {"bits": 8}  # the output layer keeps its 10 classes, but is quantized
policy_data = {
    "schema_version": 1,
    "task": "digits-cnn",
    "pipeline": {
        "pruner": {"name": "torch-pruning", "options": {"round_to": 8}},
        "distiller": {"name": "kd", "options": {"epochs": 1}},
        "quantizer": {"name": "torch-int8", "options": {"mode": "static"}},
    },
    "plan": {"layers": layers},
}

# 2. Validate: the schema (parse_policy), then component names and options against the plugins.
text = yaml.safe_dump(policy_data, sort_keys=False)
policy = parse_policy(text)
registry = load_registry()
policy.check_components(registry.components)
print(f"valid policy: task {policy.task.name}, {len(policy.plan.layers)} layers in the plan")

# 3. Write it; `orchestrate apply FILE --out DIR` (or examples/03_apply.py DIR FILE) applies it as is.
path = out_dir / "digits-policy.yaml"
path.write_text(text, encoding="utf-8")
print(f"wrote {path}; it loads back with the same plan: {load_policy(path).plan == policy.plan}")

# 4. Malformed policies: every error names the file, the line and the field.
misspelt = path.with_name("misspelt.yaml")
misspelt.write_text(text.replace("  pruner:", "  prunner:"), encoding="utf-8")
bad_option = path.with_name("bad-option.yaml")
bad_option.write_text(text.replace("epochs: 1", "epochs: 0"), encoding="utf-8")
for broken in (misspelt, bad_option):
    try:
        load_policy(broken).check_components(registry.components)
    except PolicyError as error:
        print(f"PolicyError in {error.path}, line {error.line}, field {error.field}: {error.message}")
    else:
        sys.exit(f"{broken} was accepted")
