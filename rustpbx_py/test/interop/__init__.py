"""
Interoperability tests: the PBX runs in the test's reactor on loopback with
ephemeral ports, and real SIP tools (SIPp, sipsak, sipvicious, Autobahn,
Python's ssl) talk to it.  A test whose tool is not installed skips itself.
"""
