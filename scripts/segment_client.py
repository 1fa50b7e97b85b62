"""Segment's own Python client (segment-analytics-python, from PyPI) sending
identify and track calls to a running `segsync serve`, as Segment's
libraries do: batched to /v1/batch, Basic auth with the write key, and
`Content-Encoding: gzip` when asked. Run by tests/segment_client.rs.

usage: python3 scripts/segment_client.py URL WRITE_KEY PREFIX GZIP(0|1)
"""
import sys

import segment.analytics as analytics

url, write_key, prefix, gzip = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
errors = []
analytics.write_key = write_key
analytics.host = url
analytics.gzip = gzip
analytics.sync_mode = True  # each call is sent and answered before the next
analytics.max_retries = 0
analytics.on_error = lambda error, items: errors.append(str(error))

for i in range(20):
    user = f"{prefix}-{i}"
    analytics.identify(user, {"uid": f"uid-{user}", "plan": "gold", "vip": i % 2 == 0})
    if i % 4 == 0:
        analytics.track(user, "Audience Entered", {"audience_key": "trial"})
    analytics.track(user, "Page Viewed", {"path": "/"})
analytics.flush()

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("sent")
