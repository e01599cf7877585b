"""Prints "unix-time cpu-ticks" every 0.2 s for the seqpipe-torch worker
below process ROOT (user + system ticks of all its threads), until ROOT
exits. The worker records each epoch's wall seconds but not its CPU time;
report.py reads that off these samples at the epochs' log times.

    python cpu_poll.py ROOT > samples
"""

import os
import sys
import time


def stat(pid):
    """(comm, ppid, utime + stime) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), int(fields[11]) + int(fields[12])


def find_worker(root):
    """The seqpipe-torch process that descends from `root`, if any."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                procs[int(d)] = stat(d)
            except (OSError, ValueError):
                pass  # gone meanwhile
    for pid, (comm, ppid, _) in procs.items():
        if comm != "seqpipe-torch":
            continue
        up = ppid
        while up > 1 and up in procs:
            if up == root:
                return pid
            up = procs[up][1]
    return None


def main():
    root, worker = int(sys.argv[1]), None
    while os.path.exists(f"/proc/{root}"):
        try:
            worker = worker or find_worker(root)
            if worker:
                print(f"{time.time():.3f} {stat(worker)[2]}", flush=True)
        except (OSError, ValueError):
            worker = None  # the worker ended; another may start
        time.sleep(0.2)


if __name__ == "__main__":
    main()
