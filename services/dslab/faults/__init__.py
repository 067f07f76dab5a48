"""Faults and what a client can see under them (issue 22's A-5).

    history.py       every client operation: invoked, completed, ok / fail / unknown
    linearizable.py  per-key linearizability of registers (Wing-Gong search, Lowe's memo)
    checks.py        the checks of a run: lost, phantom, linearizable, failures per second
    iptables.py      loopback rules owned by one nemesis, removed on exit
    nemesis.py       kill, pause, partition, lossy link, shard loss, power loss
    workload.py      the client: writers, single-writer registers, readers, all recorded
"""
