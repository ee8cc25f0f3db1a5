"""Signs LiveKit sample webhooks with LiveKit's own Python SDK and posts them to callpulse.

usage: post_samples_with_livekit_sdk.py BASE_URL API_KEY API_SECRET FIXTURES_DIR

The SDK's receiver also checks each token before sending, so a token this script sends is one
LiveKit's own code accepts.
"""
import base64
import datetime
import hashlib
import pathlib
import sys
import urllib.request

from livekit import api


def main() -> int:
    base, key, secret, fixtures = sys.argv[1:5]
    receiver = api.WebhookReceiver(api.TokenVerifier(key, secret))
    posted = 0
    for path in sorted(pathlib.Path(fixtures).glob("*.json")):
        body = path.read_bytes()
        sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
        token = (
            api.AccessToken(key, secret)
            .with_sha256(sha)
            .with_ttl(datetime.timedelta(minutes=5))
            .to_jwt()
        )
        receiver.receive(body.decode(), token)
        request = urllib.request.Request(
            f"{base}/webhooks/livekit",
            data=body,
            method="POST",
            headers={
                "Authorization": token,
                "Content-Type": "application/webhook+json",
                "User-Agent": "LiveKit",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                print(f"{path.name}: HTTP {response.status}", file=sys.stderr)
                return 1
        posted += 1
    print(f"posted {posted} webhooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
