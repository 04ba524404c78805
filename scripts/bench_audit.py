#!/usr/bin/env python3
"""How long the admin audit query takes for one user among many entries (a benchmark).

    .venv/bin/python scripts/bench_audit.py --entries 1000000

Fills a database of its own (MONGO_URL, prefix `bench_audit_`) with --entries entries
over --users users, laid out exactly as the audit service lays them out (its storage's
scopes and tickets, written in bulk), then times the queries the gateway asks for
(services/audit/query.py): one user's newest page, the next page by cursor, one type for
everyone, and a user's previous login. Prints a JSON report; the database is dropped.
"""
import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.clock import utcnow  # noqa: E402
from shared.config import MongoSettings, load_settings  # noqa: E402
from shared.mongo import connect  # noqa: E402
from services.audit.query import Query, page_of, previous_login_of  # noqa: E402
from services.audit.storage import ALL, AuditStorage, type_scope, user_scope  # noqa: E402

TYPES = ("OtpVerified", "SessionStarted", "OtpRejected", "SessionEnded", "LoginRequested", "AccessConfirmed")


def fill(storage, entries, users, batch=5000):
    heads, started, written = {}, time.monotonic(), 0
    start = utcnow() - timedelta(days=30)
    pending = {"entries": [], "timeline": []}
    for n in range(entries):
        username = f"W{random.randrange(users):09d}"
        event_type = random.choice(TYPES)
        record = {"_id": str(uuid.uuid4()), "type": event_type, "occurred_at": start + timedelta(seconds=n * 2.5),
                  "username": username, "actor": None, "device_id": "dev_1",
                  "reason": "code" if event_type == "SessionStarted" else None,
                  "source": {"ip": "203.0.113.7", "user_agent": "bench"}, "details": {}}
        scopes = [ALL, type_scope(event_type), user_scope(username)]
        pending["entries"].append({**record, "placed": scopes})
        for scope in scopes:
            heads[scope] = heads.get(scope, 0) + 1
            pending["timeline"].append({"_id": f"{scope}#{heads[scope]}", "event_id": record["_id"],
                                        "type": event_type, "occurred_at": record["occurred_at"]})
        if len(pending["entries"]) >= batch or n == entries - 1:
            for collection, documents in pending.items():
                storage.db[collection].insert_many(documents, ordered=False)
                documents.clear()
            written = n + 1
            rate = written / (time.monotonic() - started)
            print(f"\r[bench_audit] {written:,}/{entries:,} entries  {rate:,.0f}/s", end="", file=sys.stderr)
    storage.db.heads.insert_many([{"_id": scope, "last": last} for scope, last in heads.items()])
    print(file=sys.stderr)
    return heads


def timed(action, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(samples[len(samples) // 2], 1), "max_ms": round(samples[-1], 1)}, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = load_settings(MongoSettings, environ={**os.environ, "MONGO_DB_PREFIX": "bench_audit_"})
    client, storage = connect(AuditStorage, settings)
    client.drop_database(storage.db.name)
    try:
        started = time.monotonic()
        heads = fill(storage, args.entries, args.users)
        fill_seconds = time.monotonic() - started
        users = [scope.split(":", 1)[1] for scope in heads if scope.startswith("user:")]
        busiest = max(users, key=lambda u: heads[user_scope(u)])
        report = {"entries": args.entries, "users": len(users), "fill_s": round(fill_seconds, 1),
                  "timeline_documents": sum(heads.values()), "queries": {}}
        some_user = lambda: random.choice(users)  # noqa: E731
        figure, _ = timed(lambda: page_of(storage, Query(username=some_user(), limit=50)), args.repeat)
        report["queries"]["one user's newest 50"] = figure
        first = page_of(storage, Query(username=busiest, limit=20))
        figure, _ = timed(lambda: page_of(storage, Query(username=busiest, limit=20, cursor=first["next"])),
                          args.repeat)
        report["queries"][f"the next 20 of the busiest user ({heads[user_scope(busiest)]} entries)"] = figure
        figure, _ = timed(lambda: page_of(storage, Query(types=["OtpRejected"], limit=50)), args.repeat)
        report["queries"]["everyone's newest 50 OtpRejected"] = figure
        figure, _ = timed(lambda: previous_login_of(storage, some_user(), utcnow()), args.repeat)
        report["queries"]["a user's previous login"] = figure
        print(json.dumps(report, indent=2))
    finally:
        client.drop_database(storage.db.name)
        client.close()


if __name__ == "__main__":
    main()
