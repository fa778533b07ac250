"""State-store value encoding: MessagePack, and the JSON of the first releases still reads."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from rocksdict import Options, Rdict

from streams.processing.store import CHECKPOINT_KEY, PartitionStore, decode_value, encode_value


def test_values_round_trip_with_bytes_and_nesting() -> None:
    value = {"memory_id": "m-1", "embedding": b"\x00\x01\xff", "merges": [{"similarity": 0.93}],
             "count": 3, "value": None}
    assert decode_value(encode_value(value)) == value


def test_json_values_of_earlier_releases_still_decode() -> None:
    legacy = json.dumps({"embedding": {"$b64": base64.b64encode(b"\x00\x01").decode()},
                         "events": [{"event_id": "e1", "revision": 0}]}).encode()
    assert decode_value(legacy) == {"embedding": b"\x00\x01",
                                    "events": [{"event_id": "e1", "revision": 0}]}


def test_a_store_written_with_rocksdbs_default_options_reads_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """Files of earlier releases (snappy blocks, no bloom filter) read with today's options,
    and what today writes (lz4, bloom filters) reads back after a reopen."""
    path = tmp_path / "store"
    old = Rdict(str(path), _default_options())
    old[b"tenant\x00m-old"] = encode_value({"text": "written by an earlier release"})
    old[CHECKPOINT_KEY] = b"7"
    old.close()  # flushes: the value sits in a file written with the old options

    def emit(*_: object) -> None:
        return None

    store = PartitionStore("memories", path, "changelog", 0, emit)
    assert store.get("tenant\x00m-old") == {"text": "written by an earlier release"}
    assert store.get("tenant\x00m-absent") is None
    store.put("tenant\x00m-new", {"text": "written now"})
    store.send_changes()
    store.apply(8)
    store.close()
    reopened = PartitionStore("memories", path, "changelog", 0, emit)
    assert reopened.get("tenant\x00m-new") == {"text": "written now"}
    assert reopened.get("tenant\x00m-old") == {"text": "written by an earlier release"}
    assert reopened.checkpoint == 8
    reopened.close()


def _default_options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options
