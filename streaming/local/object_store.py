"""A real S3-compatible server on this machine, for local runs and tests of the pipeline on object storage (s3a://).

It runs S3Proxy (Apache-2.0), the one jar `deploy/local/fetch_s3proxy.sh` fetches from Maven Central, with its
on-disk filesystem-nio2 backend: each bucket is a folder and each object a file under the store's data folder. It
binds 127.0.0.1 on a free port and checks AWS signatures (v2 and v4), so a client with the wrong keys is refused as
S3 would refuse it. A tiny signed-request client (ListBuckets, CreateBucket, ListObjectsV2: Signature Version 4,
stdlib only) checks that the server is ready, creates the bucket and lets a test see which objects a writer left,
without going through the Hadoop S3A client under test. Nothing in the running system imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

from jobrec.streaming.local.embedded_kafka import free_port, stop_pid

log = logging.getLogger(__name__)

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_S3_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class ObjectStoreError(RuntimeError):
    """The local S3-compatible server could not be started, or refused a request; the message says why."""


@dataclass(frozen=True)
class ObjectStore:
    """A running local S3-compatible server: where it answers, the keys it accepts, and its bucket."""

    pid: int
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    data_dir: Path
    log_file: Path

    def uri(self, *parts: str) -> str:
        """An s3a:// URI in the store's bucket: uri("tables") -> s3a://BUCKET/tables."""
        return "/".join([f"s3a://{self.bucket}", *(p.strip("/") for p in parts)])


def s3a_spark_settings(endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    """spark.hadoop.fs.s3a.* settings (config spark.extra) for an S3-compatible server at `endpoint` over plain
    HTTP: path-style URLs (http://host:port/bucket/key: a local server has no per-bucket host names), these keys
    only (no instance profile or environment lookups), and the region the signatures name."""
    prefix = "spark.hadoop.fs.s3a."
    return {
        f"{prefix}endpoint": endpoint,
        f"{prefix}endpoint.region": REGION,
        f"{prefix}path.style.access": "true",
        f"{prefix}connection.ssl.enabled": str(endpoint.startswith("https:")).lower(),
        f"{prefix}aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        f"{prefix}access.key": access_key,
        f"{prefix}secret.key": secret_key,
    }


def s3proxy_properties(port: int, data_dir: Path, access_key: str, secret_key: str) -> str:
    """S3Proxy's properties file: loopback only, signatures checked with these keys, objects stored on disk."""
    return "\n".join(
        [
            f"s3proxy.endpoint=http://127.0.0.1:{port}",
            "s3proxy.authorization=aws-v2-or-v4",
            f"s3proxy.identity={access_key}",
            f"s3proxy.credential={secret_key}",
            "jclouds.provider=filesystem-nio2",
            # the backend's own keys: unused by a filesystem, required by S3Proxy's start-up checks
            f"jclouds.identity={access_key}",
            f"jclouds.credential={secret_key}",
            f"jclouds.filesystem.basedir={data_dir}",
        ]
    )


# --- Signature Version 4 (the AWS S3 documentation's algorithm; checked against its published examples) -----------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_v4(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    region: str = REGION,
) -> dict[str, str]:
    """The headers of an S3 request signed with Signature Version 4: `headers` plus host, x-amz-date,
    x-amz-content-sha256 and Authorization. Every header sent is signed."""
    parts = urlsplit(url)
    amz_date = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    sent = {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    sent.update({k.lower(): v.strip() for k, v in (headers or {}).items()})
    names = sorted(sent)
    query = []
    for pair in parts.query.split("&") if parts.query else []:
        key, _, value = pair.partition("=")
        query.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    canonical = "\n".join(
        [
            method,
            quote(unquote(parts.path) or "/", safe="/-_.~"),
            "&".join(f"{k}={v}" for k, v in sorted(query)),
            "".join(f"{name}:{sent[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), amz_date[:8]), region), "s3"), "aws4_request")
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    sent["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return sent


def s3_request(store: ObjectStore, method: str, path: str, query: Mapping[str, str] | None = None) -> bytes:
    """A signed request with no body to the store (path: /bucket/key); the response body. ObjectStoreError with
    S3's error for a refused one."""
    url = store.endpoint + quote(path, safe="/-_.~")
    if query:
        url += "?" + urlencode(sorted(query.items()), quote_via=quote)
    headers = sign_v4(method, url, store.access_key, store.secret_key, datetime.now(timezone.utc))
    request = urllib.request.Request(url, method=method, headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as e:
        raise ObjectStoreError(f"{method} {path} -> HTTP {e.code}: {e.read()[:500].decode(errors='replace')}") from e


def list_keys(store: ObjectStore, prefix: str = "") -> list[str]:
    """Every object key in the store's bucket under `prefix`, sorted (ListObjectsV2, all pages)."""
    keys: list[str] = []
    token = None
    while True:
        query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
        root = ET.fromstring(s3_request(store, "GET", f"/{store.bucket}", query))
        keys += [e.findtext(f"{_S3_XML}Key") or "" for e in root.iter(f"{_S3_XML}Contents")]
        token = root.findtext(f"{_S3_XML}NextContinuationToken")
        if root.findtext(f"{_S3_XML}IsTruncated") != "true" or not token:
            return sorted(keys)


# S3Proxy's debug line for each request: "... request: ...{PUT@1a2b http://127.0.0.1:PORT/bucket/key?query HTTP/1.1}"
_REQUEST_LINE = re.compile(r"\brequest: .*?\{([A-Z]+)@[0-9a-f]+ https?://[^/\s]+(/[^\s?]*)")


def requests_in_log(text: str) -> list[tuple[str, str]]:
    """(method, path) of each request in S3Proxy's debug log, in order; the path is /bucket/key, percent-decoded."""
    return [(m.group(1), unquote(m.group(2))) for m in _REQUEST_LINE.finditer(text)]


# --- the server's life ------------------------------------------------------------------------------------------


def start_object_store(
    folder: Path,
    jar: Path,
    bucket: str = "jobrec",
    log_requests: bool = False,
    timeout_seconds: float = 60.0,
    heap_mb: int = 256,
) -> ObjectStore:
    """Start S3Proxy from `jar` with its data, properties and log in `folder`, on 127.0.0.1 and a free port, with
    fresh random keys; wait until it answers a signed request and create `bucket`. With `log_requests` its log has
    every request (read them with requests_in_log)."""
    if not jar.is_file():
        raise ObjectStoreError(f"no S3Proxy jar at {jar}: deploy/local/fetch_s3proxy.sh fetches it (make setup)")
    folder = folder.resolve()
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"jobrec{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    port = free_port()
    props = folder / "s3proxy.properties"
    props.write_text(s3proxy_properties(port, data_dir, access_key, secret_key) + "\n")
    log_file = folder / "s3proxy.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [os.environ.get("JAVA", "java"), f"-Xmx{heap_mb}m", "-jar", str(jar), "--properties", str(props)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # LOG_LEVEL: S3Proxy's logback level; at debug it logs each request and each blob it reads or writes
            env={**os.environ, "LOG_LEVEL": "debug" if log_requests else "info"},
            start_new_session=True,  # a ^C in the terminal that started it goes to the caller, which stops it
        )
    store = ObjectStore(proc.pid, f"http://127.0.0.1:{port}", access_key, secret_key, bucket, data_dir, log_file)
    deadline = time.monotonic() + timeout_seconds
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ObjectStoreError(f"S3Proxy exited with {proc.returncode}: {_tail(log_file)}")
        try:
            s3_request(store, "GET", "/")  # ListBuckets: up, and our keys accepted
            break
        except (ObjectStoreError, OSError) as e:
            last_error = str(e)
            time.sleep(0.2)
    else:
        stop_object_store(store)
        raise ObjectStoreError(
            f"S3Proxy did not answer at {store.endpoint} within {timeout_seconds:.0f} s ({last_error}): "
            f"{_tail(log_file)}"
        )
    try:
        s3_request(store, "PUT", f"/{bucket}")
    except ObjectStoreError as e:
        # a store started again over the same data folder finds its bucket there
        if "BucketAlreadyOwnedByYou" not in str(e):
            stop_object_store(store)
            raise
    log.info("S3Proxy (pid %d) at %s, bucket %s, data in %s", proc.pid, store.endpoint, bucket, data_dir)
    return store


def stop_object_store(store: ObjectStore, timeout_seconds: float = 20.0) -> None:
    """Stop the server (SIGTERM, then SIGKILL after the timeout); its data folder stays."""
    stop_pid(store.pid, "object store (S3Proxy)", timeout_seconds)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"
