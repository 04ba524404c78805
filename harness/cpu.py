"""CPU time per process, from /proc: what `make bench` reports per login.

CPU seconds stay meaningful on a shared machine where wall-clock rates do not (other
people's work takes cores, not our processes' CPU time). A group is a name and its root
pids; a root's descendants count with it (RabbitMQ's Erlang VM runs under a shell).
"""
import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_table():
    """{pid: (ppid, cpu seconds)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue   # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()   # after "(comm)": state, ppid, ... utime, stime
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def snapshot(groups):
    """CPU seconds used so far by each of `groups` ({name: [root pid, ...]}) with their
    descendants, by this process (`load`: the benchmark's own client), and by the whole
    machine (busy, total)."""
    table = _process_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    used = {}
    for group, roots in groups.items():
        pending, seen, total = [pid for pid in roots if pid in table], set(), 0.0
        while pending:
            pid = pending.pop()
            if pid not in seen:
                seen.add(pid)
                total += table[pid][1]
                pending.extend(children.get(pid, ()))
        used[group] = total
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:9]]
    idle = values[3] + values[4]
    return {"groups": used, "load": table.get(os.getpid(), (0, 0.0))[1],
            "machine": ((sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK), "at": time.perf_counter()}


def usage(before, after, operations, system):
    """What happened between two snapshots: CPU-ms per operation of each group (and of
    the groups in `system` together: what the product spends, without the load
    generator's side), cores in use, and the machine's other work."""
    elapsed = after["at"] - before["at"]
    spent = {group: seconds - before["groups"].get(group, 0.0) for group, seconds in after["groups"].items()}
    spent["load_generator"] = after["load"] - before["load"]
    busy = after["machine"][0] - before["machine"][0]
    per = (lambda seconds: round(1000 * seconds / operations, 2)) if operations else (lambda seconds: None)
    return {
        "ms_per_login": {group: per(seconds) for group, seconds in sorted(spent.items())},
        "system_ms_per_login": per(sum(seconds for group, seconds in spent.items() if group in system)),
        "cores": {group: round(seconds / elapsed, 3) for group, seconds in sorted(spent.items())},
        # Everything else the machine did meanwhile: other people's work, the OS.
        "other_work_cores": round((busy - sum(spent.values())) / elapsed, 3),
    }
