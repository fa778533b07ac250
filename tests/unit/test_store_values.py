"""State-store value encoding: MessagePack, and the JSON of the first releases still reads."""

from __future__ import annotations

import base64
import json

from streams.processing.store import decode_value, encode_value


def test_values_round_trip_with_bytes_and_nesting() -> None:
    value = {"memory_id": "m-1", "embedding": b"\x00\x01\xff", "merges": [{"similarity": 0.93}],
             "count": 3, "value": None}
    assert decode_value(encode_value(value)) == value


def test_json_values_of_earlier_releases_still_decode() -> None:
    legacy = json.dumps({"embedding": {"$b64": base64.b64encode(b"\x00\x01").decode()},
                         "events": [{"event_id": "e1", "revision": 0}]}).encode()
    assert decode_value(legacy) == {"embedding": b"\x00\x01",
                                    "events": [{"event_id": "e1", "revision": 0}]}
