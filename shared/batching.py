"""Group commit: what concurrent workers write, written together.

Each database command costs the MongoDB-wire server about the same whether it carries
one document or a hundred, so a consumer that writes a few documents per message spends
most of its (and the database's) CPU on command overhead. `GroupCommit.add(item)` blocks
the calling green thread until the batch its item joined is written, and returns that
write's result for the item (or raises its error, so the caller's message is requeued as
before). Whoever finds no write in progress writes everything queued so far, then the
items queued meanwhile, until none are left: at low load an item is written at once, on
its own; under load the batches grow by themselves. `linger_seconds` lets a writer wait
that long before its first write, for items that come a moment later (for a consumer
nobody waits on, such as the audit trail: the events of one login arrive milliseconds
apart and share one write).
"""
import eventlet
import eventlet.event


class GroupCommit:
    def __init__(self, write_many, max_items=200, linger_seconds=0.0):
        """`write_many(items)` writes a list of items and returns one result per item."""
        self.write_many = write_many
        self.max_items = max_items
        self.linger_seconds = linger_seconds
        self.queued = []          # (item, event) not yet in a write
        self.writing = False

    def add(self, item):
        done = eventlet.event.Event()
        self.queued.append((item, done))
        if not self.writing:
            self._write_queued()
        return done.wait()

    def _write_queued(self):
        self.writing = True
        try:
            if self.linger_seconds:
                eventlet.sleep(self.linger_seconds)
            while self.queued:
                batch, self.queued = self.queued[:self.max_items], self.queued[self.max_items:]
                try:
                    results = self.write_many([item for item, _ in batch])
                except Exception as error:  # every waiter of this batch gets it (and requeues)
                    for _, done in batch:
                        done.send_exception(error)
                    continue
                for (_, done), result in zip(batch, results):
                    done.send(result)
        finally:
            self.writing = False
