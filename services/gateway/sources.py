"""Where a request comes from: the address that throttling counts and events record.

The peer address, unless the peer is one of TRUSTED_PROXIES: then the right-most
address in X-Forwarded-For that is not a trusted proxy (each proxy appends the address
it received the request from, so everything left of the first untrusted hop may be
made up by the client).
"""
import ipaddress

UNKNOWN = "unknown"


def parse_networks(items):
    """TRUSTED_PROXIES entries ("10.0.0.5", "10.1.0.0/16") as networks; ValueError if one is not."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _address(text):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def source_address(remote_addr, forwarded_for, trusted):
    """The request's source address as text."""
    peer = _address(remote_addr or "")
    if peer is None:
        return UNKNOWN
    if not any(peer in network for network in trusted):
        return str(peer)
    hops = [_address(hop) for hop in (forwarded_for or "").split(",")]
    for hop in reversed(hops):
        if hop is None:
            return str(peer)   # a malformed hop: nothing left of it can be trusted
        if not any(hop in network for network in trusted):
            return str(hop)
    return str(hops[0]) if hops and hops[0] is not None else str(peer)
