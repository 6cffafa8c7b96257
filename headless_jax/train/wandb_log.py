"""What W&B recorded of a run: its transaction log (`run-<id>.wandb`), the append-only file of every record W&B
writes locally, in online and offline mode alike, before (or instead of) sending it.

A session's file is flushed every `x_transaction_log_flush_interval` (15 s) and at the end; a killed session's file
ends with what was flushed, possibly mid-record. Reading it tells a resumed run which steps W&B kept, so that it
sends again exactly the ones that were lost.

The format (W&B's LevelDB-style log): a 7-byte header (":W&B", a 2-byte magic, a version byte), then 32 KiB
blocks of chunks, each a 7-byte header (CRC-32C, 2-byte length, type: 1 full, 2 first, 3 middle, 4 last) and its
bytes; the chunks of one record join into a `wandb_internal_pb2.Record`.
"""
import json
import struct

from etils import epath

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str) -> list:
    """The complete records of a transaction log, in order (a torn tail is dropped)."""
    from google.protobuf.message import DecodeError  # wandb and its protobuf are an optional extra
    from wandb.proto import wandb_internal_pb2

    data = epath.Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    found, pieces, position = [], [], HEADER
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if left_in_block < HEADER or (kind == 0 and length == 0):  # the block's zero padding
            position += left_in_block
            continue
        if kind not in (FULL, FIRST, MIDDLE, LAST) or position + HEADER + length > len(data):
            break  # the torn end of a killed session's last flush
        pieces.append(data[position + HEADER:position + HEADER + length])
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(b"".join(pieces))
            except DecodeError:
                break
            found.append(record)
            pieces = []
    return found


def history(path: str) -> list[dict]:
    """The logged rows, in order: {'_step': …, 'train/loss': …, …}."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records(path) if record.WhichOneof("record_type") == "history"]


def run_record(path: str):
    """The run's record: its id, project and logged config."""
    return next(record.run for record in records(path) if record.WhichOneof("record_type") == "run")


def last_logged_steps(wandb_dir: str, run_id: str) -> dict[str, int]:
    """split → the last step W&B recorded with a `<split>/…` value, over every session of run `run_id` whose
    transaction log is under `wandb_dir`."""
    last: dict[str, int] = {}
    for path in epath.Path(wandb_dir).glob(f"*-{run_id}/run-{run_id}.wandb"):
        for row in history(str(path)):
            for split in {key.split("/")[0] for key in row if "/" in key}:
                last[split] = max(last.get(split, -1), row["_step"])
    return last
