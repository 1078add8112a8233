"""AWS settings for S3, Secrets Manager and SNS, read when a run needs them (never at import)."""

from __future__ import annotations

import os


def region_from_environment() -> str | None:
    # botocore reads only AWS_DEFAULT_REGION; the AWS CLI and SDKs also honour AWS_REGION.
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_endpoint_from_environment() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
