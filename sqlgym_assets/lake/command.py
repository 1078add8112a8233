"""`sqlgym-lake`: tasks on the lake itself, outside Dagster runs."""

from __future__ import annotations

import argparse
import json
import os

from sqlgym_assets.lake.layout import LAKE_URL_ENV, lake_settings
from sqlgym_assets.lake.lifecycle import apply_abort_incomplete_uploads_rule


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-lake", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True)
    lifecycle = tasks.add_parser(
        "lifecycle",
        help="add the bucket lifecycle rule that aborts multipart uploads left unfinished",
    )
    lifecycle.add_argument(
        "--lake", default=os.environ.get(LAKE_URL_ENV), help=f"s3://bucket/prefix (${LAKE_URL_ENV})"
    )
    lifecycle.add_argument("--days", type=int, default=1, help="days after an upload starts")
    args = parser.parse_args(argv)
    rule = apply_abort_incomplete_uploads_rule(lake_settings(args.lake), days=args.days)
    print(json.dumps(rule, indent=2))


if __name__ == "__main__":
    main()
