"""`python -m shared.run services.otp.service`: `nameko run`, with the stop operators rely on.

nameko's own `run` stops gracefully on SIGTERM but without a bound, and knows nothing of
pid files. Here, on SIGTERM (or Ctrl-C) a service stops taking work and finishes what is
in flight (nameko's graceful stop, plus the gateway's drain, services/gateway/entrypoints.py)
for at most STOP_SECONDS, then closes its connections and exits 0; a second signal, or
the time running out, kills the containers instead.

With `--pidfile F`, F holds this process's pid while it serves. When stopping begins F
becomes F.stopping, so `scripts/stack.sh up` sees at once that a successor is needed
(the gateway closes its listening socket first thing, so the successor can bind), and
`scripts/stack.sh down` can still wait for the one that is finishing.
"""
import eventlet

eventlet.monkey_patch()  # noqa: E402 (before anything else imports the standard library's sockets)

import argparse  # noqa: E402
import errno  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import logging.config  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from nameko.cli.main import setup_yaml_parser  # noqa: E402
from nameko.cli.run import import_service  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

log = logging.getLogger("shared.run")

STOP_SECONDS = 10.0


class PidFile:
    def __init__(self, path):
        self.path = Path(path) if path else None
        self.stopping = Path(f"{path}.stopping") if path else None

    def write(self):
        if self.path:
            self.path.write_text(f"{os.getpid()}\n")

    def mark_stopping(self):
        if self.path:
            self.stopping.write_text(f"{os.getpid()}\n")
            self._remove_if_ours(self.path)

    def remove(self):
        if self.path:
            self._remove_if_ours(self.path)
            self._remove_if_ours(self.stopping)

    @staticmethod
    def _remove_if_ours(path):
        # A successor may have written its own pid there meanwhile: leave that alone.
        try:
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except OSError:
            pass


def stop_within(runner, seconds):
    stopper = eventlet.spawn(runner.stop)
    with eventlet.Timeout(seconds, False):
        stopper.wait()
        return
    log.error("not stopped within %.0f s: killing what is left", seconds)
    runner.kill()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m shared.run", description=__doc__.split("\n")[0])
    parser.add_argument("service", help="python path of the service module, e.g. services.otp.service")
    parser.add_argument("--config", default="config/nameko.yaml", help="nameko's YAML configuration")
    parser.add_argument("--pidfile", help="write this process's pid here while it serves")
    args = parser.parse_args(argv)

    if "." not in sys.path:
        sys.path.insert(0, ".")
    setup_yaml_parser()   # nameko's ${NAME:default} substitution in the YAML
    with open(args.config) as file:
        config = yaml.safe_load(file)
    logging.config.dictConfig(config["LOGGING"])

    runner = ServiceRunner(config)
    for service_cls in import_service(args.service):
        runner.add_service(service_cls)
    pidfile = PidFile(args.pidfile)
    signals = []

    def on_signal(signum, frame):
        # Signal handlers run in the hub's main loop: no eventlet primitives here.
        signals.append(signum)
        if len(signals) == 1:
            log.info("stopping (signal %d): finishing what is in flight, at most %.0f s", signum, STOP_SECONDS)
            pidfile.mark_stopping()
            eventlet.spawn_n(stop_within, runner, STOP_SECONDS)
        else:
            eventlet.spawn_n(runner.kill)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pidfile.write()
    try:
        runner.start()
        _settle_garbage_collector()
        waiting = eventlet.spawn(runner.wait)
        while True:
            try:
                waiting.wait()
                break
            except OSError as error:   # EINTR: the signal arrived while the hub slept
                if error.errno != errno.EINTR:
                    raise
    finally:
        pidfile.remove()
    log.info("stopped")


def _settle_garbage_collector():
    """What is alive once the service has started (modules, the framework, connections)
    lives as long as the process: `gc.freeze` takes it out of the cyclic collector's
    scans, which otherwise walk it again and again (measured: a twentieth of push's and
    the gateway's CPU per push login). A request's garbage is freed as before; what was
    frozen is freed by reference counting only (a cycle dropped later, such as a broker
    connection replaced after an outage, stays: a little memory per outage)."""
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
