# -*- test-case-name: rustpbx_py.test.test_media_latching -*-
"""
Media latching (symmetric RTP, RFC 4961; rtpengine and RustPBX call it
latching): a phone behind NAT announces a private address in its SDP, but
its packets reach the PBX from the NAT's public address, and only packets
sent back to that public address get through.  So the relay sends to where
the leg's media really comes from.

With C{enable_latching}, a leg is on probation until one source is
trusted; meanwhile every source's packets are relayed, candidates are
counted, and the leg is sent to at its SDP address.  The latch commits to
a source when:

  - it sends a packet with the marker bit (the start of a talkspurt, set
    on the first packet of a stream), or
  - it sends two packets with consecutive sequence numbers, or
  - C{latching_probation_max_packets} packets have arrived: the source
    that sent the most (the earliest seen among equals) wins.

Once latched, packets from any other source are dropped and counted in
L{Latch.dropped}.  A new offer/answer from the leg (re-INVITE, UPDATE)
re-opens the probation: the phone may have moved.

Without latching the leg is sent to at its SDP address and packets from
anywhere are relayed.
"""

from __future__ import annotations

from typing import Optional

Address = tuple[str, int]


class Latch:
    """
    Where one leg's RTP goes, and which of its sources are relayed.

    @ivar target: the address packets for this leg are sent to (None:
        nowhere yet, no SDP or a held C{c=0.0.0.0} stream).
    @ivar latched: the committed source, or None during probation (and
        always None without latching).
    @ivar dropped: packets refused after the latch (other sources), and
        packets that are not RTP version 2 during probation.
    """

    __slots__ = ("enabled", "probation", "sdp_address", "target", "latched",
                 "counts", "last_seq", "seen", "dropped", "latches")

    def __init__(self, enabled: bool = True, probation: int = 6) -> None:
        self.enabled = enabled
        self.probation = max(1, probation)
        self.sdp_address: Optional[Address] = None
        self.target: Optional[Address] = None
        self.latched: Optional[Address] = None
        self.counts: dict[Address, int] = {}
        self.last_seq: dict[Address, int] = {}
        self.seen = 0
        self.dropped = 0
        self.latches = 0

    def reopen(self, sdp_address: Optional[Address]) -> None:
        """
        The leg sent a new SDP naming C{sdp_address} for this stream:
        start a new probation.  Until it ends the leg is sent to its SDP
        address, or still to the latched one when the SDP address did not
        change (the NAT mapping in front of it is still the best guess).
        """
        previous = self.latched
        unchanged = sdp_address == self.sdp_address
        self.sdp_address = sdp_address
        self.latched = None
        self.counts = {}
        self.last_seq = {}
        self.seen = 0
        if self.enabled and previous is not None and unchanged:
            self.target = previous
        else:
            self.target = sdp_address

    def admit(self, data: bytes, source: Address) -> bool:
        """
        Whether the packet C{data} from C{source} is relayed; the relay
        asks only for packets that do not come from L{latched}.
        """
        if not self.enabled:
            return True
        if self.latched is not None:
            self.dropped += 1
            return False
        if len(data) < 12 or data[0] >> 6 != 2:
            self.dropped += 1
            return False
        self.seen += 1
        self.counts[source] = self.counts.get(source, 0) + 1
        seq = (data[2] << 8) | data[3]
        previous = self.last_seq.get(source)
        if data[1] & 0x80 or (previous is not None and seq == (previous + 1) & 0xFFFF):
            self.commit(source)
        elif self.seen >= self.probation:
            self.commit(max(self.counts, key=self.counts.__getitem__))
            return self.latched == source
        else:
            self.last_seq[source] = seq
        return True

    def commit(self, source: Address) -> None:
        """Latch to C{source}: send there, relay nothing else."""
        self.latched = source
        self.target = source
        self.latches += 1
        self.counts = {}
        self.last_seq = {}

    @property
    def remote(self) -> Optional[Address]:
        """The leg's address as the stats show it: latched, else SDP."""
        return self.latched or self.sdp_address


class RtcpLatch:
    """
    The RTCP side of a leg: RTCP carries no sequence number, so it latches
    to the first RTCP packet from the host the RTP comes from (any host
    while the RTP is still on probation); its SDP address is C{a=rtcp} or
    the RTP port + 1.
    """

    __slots__ = ("rtp", "sdp_address", "target", "latched", "dropped")

    def __init__(self, rtp: Latch) -> None:
        self.rtp = rtp
        self.sdp_address: Optional[Address] = None
        self.target: Optional[Address] = None
        self.latched: Optional[Address] = None
        self.dropped = 0

    def reopen(self, sdp_address: Optional[Address]) -> None:
        previous = self.latched
        unchanged = sdp_address == self.sdp_address
        self.sdp_address = sdp_address
        self.latched = None
        if self.rtp.enabled and previous is not None and unchanged:
            self.target = previous
        else:
            self.target = sdp_address

    def admit(self, data: bytes, source: Address) -> bool:
        rtp = self.rtp
        if not rtp.enabled:
            return True
        if self.latched is not None or len(data) < 8 or data[0] >> 6 != 2:
            self.dropped += 1
            return False
        if rtp.latched is not None and rtp.latched[0] != source[0]:
            self.dropped += 1
            return False
        self.latched = source
        self.target = source
        return True
