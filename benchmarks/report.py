"""What every benchmark script ends with: its markdown printed, and with `--json PATH` the same markdown plus
its headline figures (ratios against the baseline it measured in the same run) written for benchmarks/run.py."""

import json
from pathlib import Path


def emit(markdown: str, headline: dict, json_path: Path | None) -> None:
    print(markdown)
    if json_path:
        json_path.write_text(json.dumps({"markdown": markdown, "headline": headline}, indent=2))
