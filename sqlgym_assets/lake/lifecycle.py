"""The bucket's lifecycle rule that removes multipart uploads a killed writer left unfinished.

The writer aborts its own failed uploads and, before it writes a key, the stale uploads of that
key; a process killed mid-upload (kill -9, out of memory) whose key is never written again leaves
parts that S3 keeps, and bills, until this rule removes them.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from sqlgym_assets.lake.layout import LakeConfigurationError, LakeSettings

RULE_ID = "sqlgym-abort-incomplete-uploads"


def apply_abort_incomplete_uploads_rule(settings: LakeSettings, days: int = 1) -> dict[str, Any]:
    """Adds (or updates) the rule for the lake's prefix, keeping every other rule of the bucket."""
    if not settings.is_s3:
        raise LakeConfigurationError(f"{settings.url} is a local lake: lifecycle rules are S3's")
    bucket, prefix = settings.s3_location(settings.url)
    client = settings.s3_client()
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    rule = {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }
    others = [existing for existing in rules if existing.get("ID") != RULE_ID]
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*others, rule]}
    )
    return rule
