#!/usr/bin/env python3
"""Print SageMaker's ProductionVariantInstanceType enum from the installed botocore.

src/core/instance_types.csv carries one row per value of this enum (botocore 1.44.8: 277
values; the count is pinned in the unit tests of src/core/catalog.rs). Use this script to see
what a newer botocore adds or drops.

Setup (any throwaway virtualenv will do):

    python3 -m venv /tmp/bc && /tmp/bc/bin/pip install -q botocore==1.44.8   # or a newer one

Usage, from the repository root:

    # names, one per line, sorted (the default)
    /tmp/bc/bin/python scripts/extract_instance_types.py

    # diff against the catalog: '<' lines are new in botocore, '>' lines are gone from it
    /tmp/bc/bin/python scripts/extract_instance_types.py \\
        | diff - <(grep -v '^#' src/core/instance_types.csv | tail -n +2 | cut -d, -f1 | sort)

    # the enum size, to update BOTOCORE_1_44_8_ENUM_COUNT in src/core/catalog.rs
    /tmp/bc/bin/python scripts/extract_instance_types.py | wc -l

    # the enum in the model's own order (the CSV keeps this order)
    /tmp/bc/bin/python scripts/extract_instance_types.py --model-order

The botocore version used is printed on stderr. Only the standard library and botocore's data
file are used; botocore is never imported beyond locating that file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

SHAPE = "ProductionVariantInstanceType"
MODEL = Path("data") / "sagemaker" / "2017-07-24" / "service-2.json.gz"


def load_enum() -> tuple[str, list[str]]:
    """Return (botocore version, enum values in model order)."""
    try:
        import botocore  # noqa: PLC0415 - optional dependency, imported only here
    except ImportError:
        sys.exit(
            "botocore is not installed in this interpreter; see the docstring "
            "(python3 -m venv /tmp/bc && /tmp/bc/bin/pip install botocore==1.44.8)"
        )
    path = Path(botocore.__file__).parent / MODEL
    if not path.exists():
        # Older botocore releases ship the model uncompressed.
        plain = path.with_suffix("")
        if not plain.exists():
            sys.exit(f"SageMaker model not found at {path}")
        model = json.loads(plain.read_text(encoding="utf-8"))
    else:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            model = json.load(f)
    return botocore.__version__, list(model["shapes"][SHAPE]["enum"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-order",
        action="store_true",
        help="print in the order of the botocore model instead of sorted",
    )
    args = parser.parse_args()
    version, values = load_enum()
    print(f"botocore {version}: {len(values)} {SHAPE} values", file=sys.stderr)
    for value in values if args.model_order else sorted(values):
        print(value)


if __name__ == "__main__":
    main()
