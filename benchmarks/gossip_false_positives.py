"""False positives over one simulated hour at 1 % loss with one slow member (Lifeguard).

Slow-processing model (the scenario of the Lifeguard paper: a member whose CPU is
exhausted handles its messages late):

* every datagram to or from the slow member gets extra latency: a base
  ``--slow-latency`` plus an exponential part of mean ``--slow-jitter`` (so its
  round trips often exceed the 500 ms probe timeout, in both directions: it is
  probed late *and* its own probes see late acks);
* every ``--pause-every`` seconds it stops for ``--pause-for`` seconds (a GC or
  scheduling stall: everything sent to it waits, like a SIGSTOPped process).

All links lose 1 % of datagrams. A false positive is a ``dead`` verdict about a
member that was up (the slow member included: it is slow, not dead), counted by
:func:`clusterfunk.sim.checkers.gossip.false_positives` with no excuse windows except
right after the slow member's pauses (grace: the detection bound). We also count
suspicions of live members (they are legitimate SWIM behaviour; Lifeguard's aim
is that they get refuted in time) and refutations.

    python benchmarks/gossip_false_positives.py [--json] [--nodes 20] [--hours 1] [--seeds 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gossip_common import emit, sim_cluster

from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.trace import Tracer


def run(seed: int, nodes: int, hours: float, loss: float, slow_latency: float,
        slow_jitter: float, pause_every: float, pause_for: float) -> dict:
    suspects: list[tuple[str, str]] = []
    dead: list[dict] = []
    refutes = [0]
    tracer = Tracer(lambda: 0.0)

    def watch(rec: dict) -> None:
        ev = rec["ev"]
        if ev == "gossip.member" and rec["status"] == "suspect":
            suspects.append((rec["node"], rec["member"]))
        elif ev == "gossip.member" and rec["status"] == "dead":
            dead.append(rec)
        elif ev == "gossip.refute":
            refutes[0] += 1

    tracer.listeners.append(watch)
    sim, wl = sim_cluster(seed, nodes, loss=loss, tracer=tracer)
    slow = f"n{nodes}"
    slow_link = LinkConfig(latency=0.001 + slow_latency, jitter=slow_jitter, loss=loss)
    for other in sim.names:
        if other != slow:
            sim.set_link(slow, other, slow_link)
            sim.set_link(other, slow, slow_link)
    duration = hours * 3600.0
    if pause_every > 0 and pause_for > 0:
        t = pause_every
        while t < duration:
            sim.at(t, sim.pause, slow)
            sim.at(t + pause_for, sim.resume, slow)
            t += pause_every
    t0 = time.perf_counter()
    sim.run_until(duration)
    wall = time.perf_counter() - t0
    s = wl.finish(sim)
    # The tracker excuses verdicts about a member for `grace` after it resumes from a
    # pause; the slow member pauses all the time, so count every verdict about it,
    # with no excuse at all (nothing crashes in this run: every verdict is false).
    slow_dead = sum(1 for r in dead if r["member"] == slow)
    others = sum(1 for r in wl.fps.found if r["member"] != slow)
    return {
        "seed": seed,
        "false_positives": others + slow_dead,
        "dead_verdicts_total": len(dead),
        "dead_verdicts_about_slow_member": slow_dead,
        "suspicions_of_live_members": len(suspects),
        "suspicions_of_slow_member": sum(1 for _, m in suspects if m == slow),
        "refutations": refutes[0],
        "packets_per_member_s": s["packets_per_member_s"],
        "violations": s["violations"][:5],
        "wall_s": round(wall, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=1, help="independent runs (seeds 1..N)")
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--slow-latency", type=float, default=0.2, help="seconds, each way")
    ap.add_argument("--slow-jitter", type=float, default=0.15, help="mean exponential extra")
    ap.add_argument("--pause-every", type=float, default=30.0)
    ap.add_argument("--pause-for", type=float, default=1.5)
    args = ap.parse_args()
    runs = [run(seed, args.nodes, args.hours, args.loss, args.slow_latency, args.slow_jitter,
                args.pause_every, args.pause_for) for seed in range(1, args.seeds + 1)]
    total = sum(r["false_positives"] for r in runs)
    result = {"profile": "lan", "nodes": args.nodes, "hours": args.hours, "loss": args.loss,
              "slow_model": {"latency_s": args.slow_latency, "jitter_mean_s": args.slow_jitter,
                             "pause_every_s": args.pause_every, "pause_for_s": args.pause_for},
              "false_positives_total": total, "runs": runs}
    lines = [f"gossip false positives (LAN, {args.nodes} nodes, {args.hours} h simulated, "
             f"{args.loss:.0%} loss, slow member n{args.nodes}: +{args.slow_latency}s "
             f"+exp({args.slow_jitter}s) each way, {args.pause_for}s pause every "
             f"{args.pause_every}s)"]
    for r in runs:
        lines.append(f"  seed {r['seed']}: false positives {r['false_positives']}, dead verdicts "
                     f"about the slow member {r['dead_verdicts_about_slow_member']}, suspicions "
                     f"{r['suspicions_of_live_members']} ({r['suspicions_of_slow_member']} of the "
                     f"slow member), refutations {r['refutations']}, "
                     f"{r['packets_per_member_s']} pkts/member/s, wall {r['wall_s']}s")
    lines.append(f"  total false positives: {total} (aim 0)")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
