"""Faults and what a client can see under them (issue 22's A-5).

    history.py       every client operation: invoked, completed, ok / fail / unknown
    historyfile.py   a history as a file of JSON lines, validated line by line
    synthetic.py     a made-up history of atomic registers, for tests and benchmarks
    linearizable.py  per-key linearizability of registers (Wing-Gong search, Lowe's memo,
                     Porcupine's lift/unlift, never-read unknown writes pruned)
    check.py         ``python -m dslab.faults.check FILE``: a history file's verdict
    checks.py        the checks of a run: lost, refused, vanished, phantom, linearizable
    iptables.py      loopback rules owned by one nemesis, counted, removed on exit
    nemesis.py       kill, pause, partition, lossy link, shard loss, power loss; each effect
    clustertarget.py a node killed or cut off, on the three-engine cluster
    workload.py      the client: writers, single-writer registers, readers, all recorded
"""
