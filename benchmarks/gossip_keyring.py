"""Keyring cost per packet: seal and open a gossip-sized datagram (AES-GCM).

Compares the plain wire codec with the keyring in both modes (sealed, and
authenticated only), for a small probe-sized message and a full 1,400-byte
budget, and the cost of a packet a receiver opens only with its *second* key
(a rotation in progress).

    python benchmarks/gossip_keyring.py [--json] [--n 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gossip_common import emit

from clusterfunk import wire
from clusterfunk.gossip.keyring import OVERHEAD, Keyring, SecureCodec, budget_for, seeded_nonces
from clusterfunk.gossip.messages import Compound, Ping


def per_op_us(fn, arg, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    small = Ping(1, "n2", "n1", "n1:7946")
    part = wire.encode(Ping(7, "n9", "n8", "n8:7946"))
    parts = []
    while len(wire.encode(Compound(tuple(parts)))) + len(part) + 5 < budget_for(1400):
        parts.append(part)
    full = Compound(tuple(parts))
    rows = []
    for label, msg in (("probe", small), ("full", full)):
        raw = wire.encode(msg)
        row = {"message": label, "bytes": len(raw) + OVERHEAD,
               "plain_encode_us": round(per_op_us(wire.encode, msg, args.n), 2),
               "plain_decode_us": round(per_op_us(wire.decode, raw, args.n), 2)}
        for mode, enc in (("sealed", True), ("auth", False)):
            codec = SecureCodec(Keyring([k1]), encrypt=enc, nonce=seeded_nonces(random.Random(1)))
            data = codec.encode(msg)
            row[f"{mode}_encode_us"] = round(per_op_us(codec.encode, msg, args.n), 2)
            row[f"{mode}_decode_us"] = round(per_op_us(codec.decode, data, args.n), 2)
            second = SecureCodec(Keyring([k2, k1]), encrypt=enc)
            row[f"{mode}_decode_second_key_us"] = round(per_op_us(second.decode, data, args.n), 2)
        rows.append(row)
    lines = ["gossip keyring cost per packet (microseconds)"]
    for r in rows:
        lines.append(
            f"  {r['message']:5s} ({r['bytes']} B sealed): plain enc {r['plain_encode_us']} / "
            f"dec {r['plain_decode_us']}; sealed enc {r['sealed_encode_us']} / dec "
            f"{r['sealed_decode_us']} (2nd key {r['sealed_decode_second_key_us']}); auth-only "
            f"enc {r['auth_encode_us']} / dec {r['auth_decode_us']}")
    emit({"rows": rows, "overhead_bytes": OVERHEAD}, args.json, lines)


if __name__ == "__main__":
    main()
