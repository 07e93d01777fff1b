"""The local S3-compatible server's pure parts, without a JVM or a server: request signing, the s3a settings a
config needs to reach it, its properties file and the reading of its request log."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from jobrec.streaming.local.object_store import (
    ObjectStore,
    requests_in_log,
    s3a_spark_settings,
    s3proxy_properties,
    sign_v4,
)

# The AWS S3 documentation's Signature Version 4 examples ("Authenticating requests: using the Authorization
# header"): its example keys, bucket and date, and the signatures it publishes. A signer that differs from S3's
# in any detail (canonical query, header order, key derivation) gets a different signature.
AWS_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_EXAMPLE_TIME = datetime(2013, 5, 24, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "url,headers,signed_headers,signature",
    [
        (
            "https://examplebucket.s3.amazonaws.com/test.txt",
            {"Range": "bytes=0-9"},
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
        (
            "https://examplebucket.s3.amazonaws.com/?lifecycle",
            {},
            "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            # the query's parameters out of order on purpose: the canonical request sorts them
            "https://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2",
            {},
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
    ids=["get object", "get bucket lifecycle", "list objects"],
)
def test_signature_matches_the_aws_documentation_examples(
    url: str, headers: dict[str, str], signed_headers: str, signature: str
) -> None:
    sent = sign_v4("GET", url, AWS_ACCESS_KEY, AWS_SECRET_KEY, AWS_EXAMPLE_TIME, headers=headers)
    assert sent["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY}/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    assert sent["x-amz-date"] == "20130524T000000Z"
    assert sent["host"] == "examplebucket.s3.amazonaws.com"


def test_a_percent_encoded_query_is_signed_as_its_decoded_value() -> None:
    # list_keys sends prefix=a%2Fb (a slash encoded); the canonical query encodes the decoded value once, not twice
    encoded = sign_v4("GET", "http://h/b?prefix=a%2Fb", "k", "s", AWS_EXAMPLE_TIME)
    plain = sign_v4("GET", "http://h/b?prefix=a/b", "k", "s", AWS_EXAMPLE_TIME)
    assert encoded["authorization"] == plain["authorization"]


def test_s3a_settings_reach_a_local_server_over_plain_http_with_path_style_urls() -> None:
    settings = s3a_spark_settings("http://127.0.0.1:9000", "key", "secret")
    assert settings == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.access.key": "key",
        "spark.hadoop.fs.s3a.secret.key": "secret",
    }
    assert s3a_spark_settings("https://s3.example", "k", "s")["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_s3proxy_listens_on_loopback_checks_signatures_and_keeps_objects_on_disk() -> None:
    props = dict(line.split("=", 1) for line in s3proxy_properties(4567, Path("/data/s3"), "ak", "sk").splitlines())
    assert props["s3proxy.endpoint"] == "http://127.0.0.1:4567"
    assert props["s3proxy.authorization"] == "aws-v2-or-v4"
    assert (props["s3proxy.identity"], props["s3proxy.credential"]) == ("ak", "sk")
    assert props["jclouds.provider"] == "filesystem-nio2"
    assert props["jclouds.filesystem.basedir"] == "/data/s3"


def test_requests_are_read_from_s3proxy_debug_log() -> None:
    # two request lines as S3Proxy 4.1 logs them at debug, with a blob line between them that is not a request
    log = (
        "[s3proxy] D 11-28 01:01:36.312 S3Proxy-Jetty-20 o.gaul.s3proxy.S3ProxyHandler:629 |::] request: "
        "ogsoeje10s.ServletApiRequest@5987f0f7{ogsoeje10s.ServletContextRequest@75d53d35{ogsoejsh.GracefulHandler"
        "$ShutdownTrackingRequest@3a6476d2{GET@68b36e55 http://127.0.0.1:40101/probe?list-type=2&prefix=c%2F "
        "HTTP/1.1}}}\n"
        "[s3proxy] D 11-28 01:01:36.314 S3Proxy-Jetty-20 o.g.s.n.AbstractNio2BlobStore:312 |::] Listing blobs at: "
        "/tmp/data/probe/c\n"
        "[s3proxy] D 11-28 01:03:08.105 S3Proxy-Jetty-17 o.gaul.s3proxy.S3ProxyHandler:629 |::] request: "
        "ogsoeje10s.ServletApiRequest@d969bca{ogsoeje10s.ServletContextRequest@2a1c6460{ogsoejsh.GracefulHandler"
        "$ShutdownTrackingRequest@25562b3d{PUT@3db35ed http://127.0.0.1:40101/probe/c/offsets/.2.3f31.tmp "
        "HTTP/1.1}}}\n"
    )
    assert requests_in_log(log) == [("GET", "/probe"), ("PUT", "/probe/c/offsets/.2.3f31.tmp")]


def test_uri_names_a_key_prefix_in_the_bucket() -> None:
    store = ObjectStore(1, "http://127.0.0.1:1", "ak", "sk", "bucket", Path("/d"), Path("/d/log"))
    assert store.uri("run-1", "tables") == "s3a://bucket/run-1/tables"
    assert store.uri("/checkpoints/") == "s3a://bucket/checkpoints"
