"""The push requests this process made: their expiry clock, and what making them found."""
import heapq

from nameko.extensions import DependencyProvider


class ExpiryClock(DependencyProvider):
    """The requests made here, by expiry, so the once-a-second sweep settles the ones
    nobody answered (LoginExpired) without looking for them in the database; a request
    answered here is struck off and costs the sweep nothing. What a stopped process left
    on its clock is found by the purge's backstop (PushStorage.unanswered_overdue).

    Until then the request's document is at hand for its notification, the device's
    poll and its answer (a request's document never changes once stored, nor does an
    answer), and so are the devices `request_login` found for its notification, read
    milliseconds before: a device revoked in between may be notified but cannot answer
    (`respond` reads its status). Another instance, or this one after a restart, reads
    them from the database."""

    def setup(self):
        self.queue = []     # (expires_at, challenge_id, request _id)
        self.made = {}      # request _id -> request, until due
        self.mine = {}      # challenge_id -> request, until answered or due
        self.settled = set()   # challenge ids answered here, until due
        self.unnotified = {}   # request_id -> (request, its devices), until notified or due

    def get_dependency(self, worker_ctx):
        return self

    def add(self, request, devices):
        self.made[request["_id"]] = request
        self.mine[request["challenge_id"]] = request
        self.unnotified[request["request_id"]] = (request, devices)
        heapq.heappush(self.queue, (request["expires_at"], request["challenge_id"], request["_id"]))

    def unanswered(self, challenge_id):
        """The request made here with this challenge id, unless answered here or due."""
        return self.mine.get(challenge_id)

    def to_notify(self, request_id):
        """(request, the devices found for it) of a request made here, once (None: not
        made here, or already notified)."""
        return self.unnotified.pop(request_id, None)

    def made_here(self, request_key):
        """The request made here with this `_id` ("username#n"), until it is due."""
        return self.made.get(request_key)

    def answered_here(self, challenge_id):
        return challenge_id in self.settled

    def answered(self, challenge_id):
        if self.mine.pop(challenge_id, None) is not None:
            self.settled.add(challenge_id)

    def due(self, now):
        """The requests made here whose time is up and that were not answered here."""
        found = []
        while self.queue and self.queue[0][0] <= now:
            _, challenge_id, request_key = heapq.heappop(self.queue)
            self.made.pop(request_key, None)
            self.settled.discard(challenge_id)
            request = self.mine.pop(challenge_id, None)
            if request is not None:
                self.unnotified.pop(request["request_id"], None)
                found.append(request)
        return found
