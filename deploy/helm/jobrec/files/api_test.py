"""`helm test`: post one click through the API, then read a list back from it. Run in the chart's image by
templates/tests/test-api.yaml; only the standard library and jobrec's own event builder.

Environment: JOBREC_API_URL (http://service:port), JOBREC_API_TOKEN (optional bearer token),
JOBREC_TEST_TIMEOUT_SECONDS (how long to wait for the list). Exit 0 when the click was accepted and a list came
back for its user; otherwise a line saying what failed, and exit 1.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from jobrec.streaming.producer import make_click_event

URL = os.environ["JOBREC_API_URL"].rstrip("/")
TOKEN = os.environ.get("JOBREC_API_TOKEN", "")
DEADLINE = time.monotonic() + float(os.environ.get("JOBREC_TEST_TIMEOUT_SECONDS", "120"))


def call(method, path, body=None):
    headers = {"Content-Type": "application/json"}
    if TOKEN:
        headers["Authorization"] = "Bearer " + TOKEN
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


user = "helm-test-" + uuid.uuid4().hex[:12]
event = make_click_event(user, "helm-test-job", "view")
while True:
    try:
        status, answer = call("POST", "/v1/events", event)  # the same event_id on every try
        break
    except OSError as e:
        if time.monotonic() > DEADLINE:
            sys.exit(f"FAIL: the API did not answer at {URL}: {e}")
        time.sleep(2)
if status != 200 or answer.get("accepted") != 1:
    sys.exit(f"FAIL: POST /v1/events answered {status}: {answer}")
print(f"posted click {event['event_id']} for {user}")
while True:
    status, answer = call("GET", "/v1/recommendations/" + user)
    if status == 200 and answer.get("user_id") == user and answer.get("items"):
        print(f"read a list of {len(answer['items'])} jobs for {user} (source {answer.get('source')})")
        sys.exit(0)
    if time.monotonic() > DEADLINE:
        sys.exit(f"FAIL: GET /v1/recommendations/{user} answered {status}: {answer}")
    time.sleep(2)
