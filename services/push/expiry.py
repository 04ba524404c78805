"""The expiry clock of the push requests this process made."""
import heapq

from nameko.extensions import DependencyProvider


class ExpiryClock(DependencyProvider):
    """The requests made here, by expiry, so the once-a-second sweep settles the ones
    nobody answered (LoginExpired) without looking for them in the database; a request
    answered here is struck off and costs the sweep nothing. What a stopped process left
    on its clock is found by the purge's backstop (PushStorage.unanswered_overdue)."""

    def setup(self):
        self.queue = []     # (expires_at, challenge_id)
        self.mine = {}      # challenge_id -> request, until answered or due

    def get_dependency(self, worker_ctx):
        return self

    def add(self, request):
        self.mine[request["challenge_id"]] = request
        heapq.heappush(self.queue, (request["expires_at"], request["challenge_id"]))

    def answered(self, challenge_id):
        self.mine.pop(challenge_id, None)

    def due(self, now):
        """The requests made here whose time is up and that were not answered here."""
        found = []
        while self.queue and self.queue[0][0] <= now:
            _, challenge_id = heapq.heappop(self.queue)
            request = self.mine.pop(challenge_id, None)
            if request is not None:
                found.append(request)
        return found
